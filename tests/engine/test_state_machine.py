"""Random sequences of operations, guests, faults and kills keep the invariants.

Guests hold a group in each way the kernel knows: the group node, a device fd only
(group fd closed), or the iommufd cdev only; writes fail, the process is killed, or a
write stays in the kernel past its timeout (the engine then finishes by itself).

- every endpoint of an IOMMU group is on the same side (all on vfio-pci, or none);
- every device is either on vfio-pci because it was asked to be, or on its original
  driver (no device is ever left without the driver it had).
"""

from __future__ import annotations

import errno
import shutil
import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vfiod.engine import Engine
from vfiod.errors import Timeout, VfiodError
from vfiod.records import State
from vfiod.sim import SimHost

from vfiod.sim import SimulatedCrash

from .placement import driver_of

# Groups the host lets go of without force: (a device to name, every endpoint of the group).
GROUPS = {
    31: ("0000:06:00.0", ["0000:06:00.0", "0000:06:00.1"]),
    32: ("0000:09:00.1", ["0000:09:00.0", "0000:09:00.1"]),
    5: ("0000:00:11.4", ["0000:00:11.0", "0000:00:11.4"]),
    40: ("0000:11:00.0", ["0000:11:00.0"]),
}


class BindingMachine(RuleBasedStateMachine):
    """The engine against the simulated kernel, with a model of what was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="vfiod-sm-"))
        self.host = SimHost(profile="seed-x99", desktop=False)
        self.engine = Engine(self.host, self.tmp / "state", write_timeout=5.0)
        self.original = {a: driver_of(self.host, a)
                         for _, members in GROUPS.values() for a in members}
        self.asked_vfio: set[int] = set()
        self.guests: dict[int, object] = {}

    def teardown(self) -> None:
        for guest in self.guests.values():
            guest.close()  # type: ignore[attr-defined]
        self.host.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _attempt(self, operation: str, group: int) -> None:
        """Run an operation; the model follows only when it succeeds."""
        try:
            getattr(self.engine, operation)(GROUPS[group][0])
        except VfiodError:
            return
        if operation == "bind":
            self.asked_vfio.add(group)
        else:
            self.asked_vfio.discard(group)

    @rule(group=st.sampled_from(sorted(GROUPS)))
    def bind(self, group: int) -> None:
        try:
            self.engine.bind(GROUPS[group][0])
            self.asked_vfio.add(group)
        except VfiodError:
            pass

    @rule(group=st.sampled_from(sorted(GROUPS)))
    def unbind(self, group: int) -> None:
        try:
            self.engine.unbind(GROUPS[group][0])
            self.asked_vfio.discard(group)
        except VfiodError:
            assert group in self.guests  # the only reason a clean unbind is refused

    @rule(group=st.sampled_from(sorted(GROUPS)), step=st.integers(0, 7),
          err=st.sampled_from([errno.ENODEV, errno.EBUSY, errno.EINVAL, errno.EIO]),
          operation=st.sampled_from(["bind", "unbind"]))
    def operation_with_a_failing_write(self, group: int, step: int, err: int,
                                       operation: str) -> None:
        self.host.faults.fail_at(step, err)
        try:
            self._attempt(operation, group)
        finally:
            self.host.faults.clear()

    @rule(group=st.sampled_from(sorted(GROUPS)), step=st.integers(0, 7), after=st.booleans(),
          operation=st.sampled_from(["bind", "unbind"]))
    def killed_mid_operation_then_restarted(self, group: int, step: int, after: bool,
                                            operation: str) -> None:
        if after:
            self.host.faults.crash_after(step)
        else:
            self.host.faults.crash_before(step)
        try:
            self._attempt(operation, group)
        except SimulatedCrash:
            pass
        finally:
            self.host.faults.clear()
        self.engine = Engine(self.host, self.tmp / "state", write_timeout=5.0)
        self.engine.recover()

    @rule(group=st.sampled_from(sorted(GROUPS)), operation=st.sampled_from(["bind", "unbind"]))
    def write_stays_in_the_kernel_past_its_timeout(self, group: int, operation: str) -> None:
        finished = threading.Event()
        self.engine.set_listener(lambda _addresses: finished.set())
        writer = self.engine.transactions.writer
        timeout, writer.timeout = writer.timeout, 0.1
        self.host.faults.delay("*", 0.4, times=1)  # the operation's first write
        try:
            getattr(self.engine, operation)(GROUPS[group][0])
        except Timeout:
            # The engine finishes by itself once the kernel returns.
            assert finished.wait(10.0), "the stalled operation never finished"
        except VfiodError:
            return  # refused before any write (a guest holds the group)
        finally:
            writer.timeout = timeout
            self.host.faults.clear()
            self.engine.set_listener(None)
        if operation == "bind":
            self.asked_vfio.add(group)
        else:
            self.asked_vfio.discard(group)

    @precondition(lambda self: any(g not in self.guests for g in self.asked_vfio))
    @rule(data=st.data(), kind=st.sampled_from(["group node", "device fd only", "cdev only"]))
    def guest_starts(self, data: st.DataObject, kind: str) -> None:
        group = data.draw(st.sampled_from(sorted(g for g in self.asked_vfio
                                                 if g not in self.guests)))
        device = GROUPS[group][1][0]
        paths = [f"/dev/vfio/{group}"] if kind == "group node" else []
        device_fds = {"group node": [], "device fd only": [f"@{device}"],
                      "cdev only": [device]}[kind]
        self.guests[group] = self.host.spawn_holder(  # type: ignore[attr-defined]
            paths, comm="qemu-system-x86", device_fds=device_fds)

    @precondition(lambda self: bool(self.guests))
    @rule(data=st.data())
    def guest_stops(self, data: st.DataObject) -> None:
        group = data.draw(st.sampled_from(sorted(self.guests)))
        self.guests.pop(group).close()  # type: ignore[attr-defined]

    @invariant()
    def nothing_stays_busy_once_operations_are_over(self) -> None:
        busy = [row.address for row in self.engine.status() if row.state is State.BUSY]
        assert busy == [], busy

    @invariant()
    def every_group_is_on_one_side(self) -> None:
        for group, (_, members) in GROUPS.items():
            sides = {driver_of(self.host, a) == "vfio-pci" for a in members}
            assert len(sides) == 1, (group, {a: driver_of(self.host, a) for a in members})

    @invariant()
    def every_device_is_where_it_was_asked_or_where_it_came_from(self) -> None:
        for group, (_, members) in GROUPS.items():
            for a in members:
                want = "vfio-pci" if group in self.asked_vfio else self.original[a]
                assert driver_of(self.host, a) == want, (a, group, self.asked_vfio)


TestBindingMachine = BindingMachine.TestCase
TestBindingMachine.settings = settings(
    max_examples=20, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
