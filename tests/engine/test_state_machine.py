"""Random sequences of operations, guests, faults and kills keep the invariants.

- every endpoint of an IOMMU group is on the same side (all on vfio-pci, or none);
- every device is either on vfio-pci because it was asked to be, or on its original
  driver (no device is ever left without the driver it had).
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vfiod.engine import Engine
from vfiod.errors import VfiodError
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

    @precondition(lambda self: any(g not in self.guests for g in self.asked_vfio))
    @rule(data=st.data())
    def guest_starts(self, data: st.DataObject) -> None:
        group = data.draw(st.sampled_from(sorted(g for g in self.asked_vfio
                                                 if g not in self.guests)))
        self.guests[group] = self.host.spawn_holder(  # type: ignore[attr-defined]
            [f"/dev/vfio/{group}"], comm="qemu-system-x86")

    @precondition(lambda self: bool(self.guests))
    @rule(data=st.data())
    def guest_stops(self, data: st.DataObject) -> None:
        group = data.draw(st.sampled_from(sorted(self.guests)))
        self.guests.pop(group).close()  # type: ignore[attr-defined]

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
