"""Which operations of seed-x99 the kill-point and fault scenarios run, and how to judge
where a machine ended."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vfiod.engine import Engine
from vfiod.errors import VfiodError
from vfiod.sim import SimHost

from engine.placement import placement

#: One endpoint of every IOMMU group of seed-x99 that holds one, and whether a bind
#: needs force (a display, the network, the keyboard). The root disk's group (12) is
#: refused before any write: it has no kill point, and is checked as never moved.
GROUPS: dict[str, bool] = {
    "0000:06:00.0": False, "0000:09:00.0": False, "0000:00:1b.0": False,
    "0000:11:00.0": False, "0000:00:11.4": False, "0000:05:00.0": True,
    "0000:00:19.0": True, "0000:00:14.0": True, "0000:00:1f.2": True,
}
#: The short form's groups: a GPU with its audio, and a single-function group.
SOME = ["0000:06:00.0", "0000:00:1b.0"]
OPERATIONS = ("bind", "unbind", "reset")

Placement = dict[str, tuple[str | None, str | None]]


def groups(which: str) -> list[str]:
    """The groups a form covers ("some" or "all")."""
    return SOME if which == "some" else list(GROUPS)


@dataclass
class Machine:
    """A simulated seed-x99 and an engine over it, prepared for one operation."""

    sim: SimHost
    state: Path
    device: str
    operation: str
    #: Every function of the machine (read once: reading them is an engine's scan).
    addresses: list[str]

    @property
    def engine(self) -> Engine:
        """A new engine (a restarted daemon) over the same machine and state."""
        return Engine(self.sim, self.state, write_timeout=5.0)

    def everything(self) -> Placement:
        """(driver, driver_override) of every function of the machine."""
        return placement(self.sim, self.addresses)

    def run(self, engine: Engine | None = None) -> None:
        """The operation (force where the group needs it); VfiodError propagates."""
        engine = engine or self.engine
        force = GROUPS[self.device]
        if self.operation == "bind":
            engine.bind(self.device, force=force)
        elif self.operation == "unbind":
            engine.unbind(self.device)
        else:
            engine.reset(self.device, force=force)


def prepare(tmp: Path, device: str, operation: str) -> Machine:
    """A fresh machine where *operation* makes sense: unbind and reset start on vfio-pci."""
    sim = SimHost(profile="seed-x99", desktop=False)
    machine = Machine(sim, tmp, device, operation,
                      sorted(sim.listdir("/sys/bus/pci/devices")))
    if operation in ("unbind", "reset"):
        try:
            machine.engine.bind(device, force=GROUPS[device])
        except VfiodError:
            pass  # a group vfiod refuses stays where it is: the operation is refused too
    return machine


def clean_writes(tmp: Path, device: str, operation: str) -> tuple[int, Placement, list[str]]:
    """How many host writes the operation makes when nothing goes wrong (as the fault
    plan counts them), where it leaves the machine, and the paths it writes."""
    machine = prepare(tmp, device, operation)
    try:
        logged = len(machine.sim.write_log)
        counted = machine.sim.faults._count  # the index fail_at and crash_* count from
        try:
            machine.run()
        except VfiodError:
            pass
        paths = [path for path, _value, _err in machine.sim.write_log[logged:]]
        return machine.sim.faults._count - counted, machine.everything(), paths
    finally:
        machine.sim.close()
