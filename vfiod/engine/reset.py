"""Reset: a ladder of rungs, climbed until the function is healthy.

1. The kernel's own methods, best first (``device_specific`` first when vendor-reset is
   loaded and covers the card); the kernel's ``bus`` is the secondary bus reset of the
   parent bridge when the function is alone below it.
2. VFIO's hot reset of the whole bus, when other functions share it and every one of
   them is on vfio-pci and free (the bus reset the kernel refuses per function).
3. Remove and rescan of the slot, when every function of it is on vfio-pci and free and
   it sits below a bridge: ``driver_override`` set again and the functions probed onto
   vfio-pci (moved back from the host driver the rescan's own probe gave them).
4. Still not healthy: the device is in error, unhealthy, and the message says what the
   user can still do.

After each rung the health check (vfiod.engine.health) decides; the first rung that
leaves the function healthy ends the climb. A rung that errs or leaves it unhealthy is
followed by the next. The climb is refused while a guest holds the group (or any group
on the bus, for the hot reset), or while the host uses the device.

The fence: vfiod holds the device's group node through the reset, and for a hot reset
the node of every group on the bus, whose fds the hot reset uses (a second open of a
group is EBUSY). A reset write that outlives its timeout leaves the device busy until
the kernel returns; it is then checked in the background.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from vfiod import vendor_reset_ids
from vfiod.address import bus_of
from vfiod.engine.health import Expected, Health
from vfiod.engine import progress
from vfiod.engine.fence import Fence, raise_fence
from vfiod.engine.inventory import Inventory
from vfiod.engine.plan import HOT_RESET, Plan, check_not_held, plan_reset
from vfiod.engine.transactions import stall_reason
from vfiod.engine.writes import Writer
from vfiod.errors import HostWriteError, HostWriteTimeout, ResetFailed, Timeout, VfiodError
from vfiod.host.base import PendingWrite
from vfiod.journal import Journal
from vfiod.host import paths
from vfiod.model import PciDevice

log = logging.getLogger("vfiod.engine")


def _reset_failure(method: str, err: int) -> str:
    """``bus: ENOTTY (another function shares the bus)``: one method's failure, explained."""
    name = errno_mod.errorcode.get(err, str(err))
    if method == "bus" and err in (errno_mod.ENOTTY, errno_mod.EINVAL):
        # ENOTTY from the reset, EINVAL when selecting it: the kernel's bus-reset probe
        # fails while other functions sit on the same bus.
        return f"{method}: {name} (another function shares the bus)"
    return f"{method}: {name}"


def describe(dev: PciDevice) -> str:
    """``0000:06:00.1 (NVIDIA ... HDMI Audio Controller, snd_hda_intel)``."""
    what = ", ".join(x for x in (dev.name, dev.driver or "no driver") if x)
    return f"{dev.address} ({what})"


def hot_reset_obstacle(dev: PciDevice, on_bus: Mapping[str, PciDevice]) -> str | None:
    """Why VFIO's hot reset of *dev*'s bus cannot be tried now (naming the functions in the
    way and what to do), or None when the bus qualifies: every function on it ours (on
    vfio-pci) and none a bridge. Holders are checked separately (InUse)."""
    bus = bus_of(dev.address)
    what = f"a reset of the whole bus {bus} (VFIO's hot reset)"
    bridges = [d for d in on_bus.values() if d.is_bridge]
    if bridges:
        return (f"{what} would also reset everything below "
                + ", ".join(describe(b) for b in bridges) + "; vfiod does not try it")
    away = [d for d in on_bus.values() if not d.on_vfio]
    if not away:
        return None
    carries = [describe(d) for d in on_bus.values()]
    # One bind per IOMMU group: binding a function moves its whole group.
    first_of_group: dict[int | str, str] = {}
    for d in away:
        first_of_group.setdefault(d.iommu_group if d.iommu_group is not None else d.address,
                                  d.address)
    bind = ", ".join(f"vfioctl bind {a}" for a in first_of_group.values())
    return (f"{what} needs every function on it on vfio-pci; the bus carries "
            f"{_and(carries)}: put {_and([d.address for d in away])} on vfio-pci first "
            f"({bind}) to reset the bus together")


def _bus_mates(devices: Mapping[str, PciDevice], address: str) -> list[str]:
    """Resetter.bus_mates over the snapshot *devices*."""
    dev = devices.get(address)
    if dev is None or dev.parent is None:
        return []  # no bridge above a root bus: nothing resets it as a whole
    bus = bus_of(address)
    mates = sorted(a for a in devices if bus_of(a) == bus)
    return mates if len(mates) > 1 else []


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


#: The rungs past the kernel's own methods, by the name planned_rungs() gives them.
REMOVE_RESCAN = "remove_rescan"
#: What the D-Bus Reset answers for each of them (the contract's method names).
_METHOD_OF_RUNG = {HOT_RESET: "bus", REMOVE_RESCAN: "remove_rescan"}


@dataclass(frozen=True)
class ResetOutcome:
    """How one climb of the ladder ended, for the caller's record."""

    address: str
    #: The method that left it healthy, as Reset answers (``flr``, ``bus`` for either
    #: bus reset, ``device_specific``, ``remove_rescan``); "" when none did.
    method: str
    #: Every rung tried, in order (kernel method names, ``hot_reset``,
    #: ``remove_rescan``); when healthy, the last one is the one that worked.
    rungs_tried: tuple[str, ...]
    healthy: bool
    #: Why it is not healthy (each rung's failure, then what the user can do); "" when
    #: healthy.
    problem: str
    #: Wall-clock time the climb took, in seconds.
    seconds: float
    #: When it ended, seconds since the epoch.
    at: float
    #: False when the kernel refused every rung before resetting anything (ENOTTY or
    #: EINVAL: another function shares the bus): a refusal, not a device that failed.
    touched: bool = True


@dataclass
class _Climb:
    """One climb in progress: the rungs still allowed, what was tried and why it failed.
    A climb outlives its call when a rung's write outlives its timeout."""

    dev: PciDevice
    rungs: list[str]
    expected: Expected
    tried: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: Rungs the kernel refused before resetting anything (ENOTTY, EINVAL).
    refused: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def what_is_left(dev: PciDevice, vendor_reset_loaded: bool) -> str:
    """What the user can still do for a function no rung brought back."""
    family = vendor_reset_ids.family(dev.vendor, dev.device)
    hint = ""
    if family is not None and not vendor_reset_loaded:
        hint = (f"; it is an AMD {family} card with the AMD reset bug: install and load "
                f"the vendor-reset module (modprobe {vendor_reset_ids.MODULE}) so that "
                "vfiod can use its device_specific reset")
    return ("what is left: suspend and resume the host (a trip through D3cold revives "
            f"some cards), or reboot the host{hint}")


class Resetter:
    """Resets PCI functions and checks that they came back."""

    def __init__(self, inventory: Inventory, writer: Writer,
                 journal: Journal) -> None:
        self.inventory = inventory
        self.host = inventory.host
        self.writer = writer
        #: Where a remove and rescan is recorded while it runs.
        self.journal = journal
        self.health = Health(self.host)
        self._outcomes: dict[str, ResetOutcome] = {}

    def last_outcome(self, address: str) -> ResetOutcome | None:
        """How the last climb on this function ended (also a failed one), or None."""
        return self._outcomes.get(address)

    def planned_rungs(self, address: str) -> list[str]:
        """The rungs a reset of *address* would try, in order, as the host is now; no
        write. Holders are not considered (a held device is refused before any rung)."""
        devices = self.inventory.devices()
        dev = devices.get(address)
        if dev is None:
            return []
        rungs = list(self._own_plan(dev))
        mates = _bus_mates(devices, address)
        if mates and hot_reset_obstacle(dev, {a: devices[a] for a in mates}) is None:
            rungs.append(HOT_RESET)
        if self._rescan_obstacle(dev, self._slot(dev, devices)) is None:
            rungs.append(REMOVE_RESCAN)
        return rungs

    def reset_outcome(self, address: str, *, force: bool = False,
                      only: Collection[str] | None = None) -> ResetOutcome:
        """Reset a function (resolved already): climb the ladder (see the module) until
        it is healthy; the whole outcome, or ResetFailed naming each rung's failure and
        what the user can still do (last_outcome() then holds it). *only*: climb only
        these rungs (names as planned_rungs gives them), skipping the others. The caller
        holds the locks of every group on the bus (Engine.lock_keys)."""
        return self.execute(self.plan(address, force=force), only=only)

    def plan(self, address: str, *, force: bool = False) -> Plan:
        """The plan of a reset (vfiod.engine.plan.plan_reset), holding the device's
        group fence (release() or execute())."""
        return plan_reset(self.inventory, address, force=force, rungs_of=self.planned_rungs)

    def execute(self, plan: Plan, *, only: Collection[str] | None = None) -> ResetOutcome:
        """Run a reset plan: raise its refusal, or climb the ladder (*only*: these rungs);
        the outcome, or ResetFailed naming each rung's failure."""
        fence = plan.take_fence()
        try:
            if plan.refusal is not None and not isinstance(plan.refusal, ResetFailed):
                raise plan.refusal
            # No rung to try (ResetFailed): the ladder still runs, and says in its own
            # words why each way is closed, and records it.
            dev = plan.device
            assert dev is not None
            climb = _Climb(dev, [r for r in [*self._own_plan(dev), HOT_RESET, REMOVE_RESCAN]
                                 if only is None or r in only],
                           self.health.expect(dev))
            try:
                return self._climb(dev, fence, climb)
            except HostWriteTimeout as exc:
                self._stall(dev, fence, exc, climb)
                fence = None  # the finisher holds it now
                raise Timeout(f"{exc}; {plan.address} stays busy until the kernel returns, "
                              "then vfiod checks it by itself (and climbs on when it is "
                              "not healthy)") from None
        finally:
            if fence is not None:
                fence.close()

    def _climb(self, dev: PciDevice, fence: Fence | None, climb: "_Climb") -> ResetOutcome:
        """Climb the rungs of *climb* from where it is; the outcome, or ResetFailed when
        no rung made the function healthy."""
        address, tried, failures, expected = dev.address, climb.tried, climb.failures, \
            climb.expected
        worked = None
        plan = [r for r in climb.rungs if r not in (HOT_RESET, REMOVE_RESCAN)]
        if plan:
            worked = self._own_methods(dev, failures, plan, expected, tried, climb.refused)
        if worked is None and HOT_RESET in climb.rungs:
            worked = self._hot_reset(dev, failures, fence, expected, tried)
        if worked is None and REMOVE_RESCAN in climb.rungs:
            worked = self._remove_rescan(dev, failures, fence, expected, tried)
        if worked is not None:
            return self._healthy(address, worked, climb)
        dev = climb.dev
        # Unhealthy only when config space says so now: rungs the kernel refused before
        # touching the device (ENOTTY: another function shares the bus; an errno) leave
        # it as healthy as it was, and a later successful call clears the error mark.
        found = self.health.check(address, climb.expected) if tried else []
        left = what_is_left(dev, self.host.module_loaded(vendor_reset_ids.MODULE))
        if not tried and not dev.reset_methods:
            message = "; ".join([f"{address}: the kernel offers no reset method of its "
                                 "own for it", *failures])
        elif not found:
            message = f"{address}: no reset method worked: " + "; ".join(failures) \
                + (f"; {left}" if tried else "")
        else:
            message = (f"{address}: still not healthy after every reset vfiod could try "
                       f"({', '.join(tried)}): " + "; ".join(failures) + "; " + left)
        outcome = ResetOutcome(address, "", tuple(tried), False, message,
                               time.monotonic() - climb.started, time.time(),
                               touched=any(r not in climb.refused for r in tried))
        self._outcomes[address] = outcome
        self.inventory.record_error([address], message)
        if found:
            self.inventory.mark_unhealthy(address, "; ".join(found))
        if tried:
            log.error("%s", message)
        raise ResetFailed(message)

    def _healthy(self, address: str, worked: str, climb: "_Climb") -> ResetOutcome:
        """The climb ended: *worked* left the function healthy."""
        outcome = ResetOutcome(address, _METHOD_OF_RUNG.get(worked, worked),
                               tuple(climb.tried), True, "",
                               time.monotonic() - climb.started, time.time())
        self._outcomes[address] = outcome
        self.inventory.clear_errors([address])
        self.inventory.mark_healthy([address])
        if len(climb.tried) > 1:
            log.info("%s: healthy after %s (rungs tried: %s)", address, worked,
                     ", ".join(climb.tried))
        return outcome

    def _check(self, address: str, rung: str, expected: Expected,
               failures: list[str]) -> bool:
        """The health check after *rung*: True when healthy, else why added to *failures*."""
        found = self.health.check(address, expected)
        if found:
            failures.append(f"{rung}: reported success but " + "; ".join(found))
        return not found

    def _own_plan(self, dev: PciDevice) -> list[str]:
        """The function's own methods to try, best first: device_specific first when
        vendor-reset is loaded and covers the card (the kernel lists it only when its
        probe passed as the device was added, so it is selected explicitly)."""
        plan = [m for m in dev.reset_methods]
        if ("device_specific" not in plan
                and vendor_reset_ids.family(dev.vendor, dev.device) is not None
                and "default" not in plan
                and self.host.module_loaded(vendor_reset_ids.MODULE)):
            plan.insert(0, "device_specific")
        return plan

    def _stall(self, dev: PciDevice, fence: Fence | None, exc: HostWriteTimeout,
               climb: "_Climb") -> None:
        """Show the device busy until the stalled reset write returns; then check it
        (on a thread of its own), climb on from the next rung when it is not healthy,
        and tell the listener."""
        address = dev.address
        self.inventory.stall([address], stall_reason(self.inventory, exc, dev.iommu_group))

        def finish() -> None:
            handed_on = False
            try:
                if isinstance(exc.pending, PendingWrite):
                    exc.pending.wait()
                self.inventory.stall([address], "checking the device after the kernel "
                                     "returned from its reset", readable=True)
                self.inventory.reread([address])
                try:
                    self._climb_on(address, fence, climb, exc)
                except HostWriteTimeout as again:
                    self._stall(climb.dev, fence, again, climb)
                    handed_on = True
                except (ResetFailed, VfiodError) as err:
                    log.error("%s: %s", address, err)
            finally:
                self.inventory.unstall([address])
                if fence is not None and not handed_on:
                    fence.close()
                self.inventory.notify([address])

        threading.Thread(target=finish, name=f"finish reset {address}", daemon=True).start()

    def _climb_on(self, address: str, fence: Fence | None, climb: "_Climb",
                  exc: HostWriteTimeout) -> ResetOutcome:
        """The rung whose write outlived its timeout returned: healthy ends the climb,
        otherwise it goes on from the next rung."""
        rung = climb.tried[-1] if climb.tried else ""
        dev = self.inventory.device(address) or climb.dev
        if rung and rung not in (HOT_RESET, REMOVE_RESCAN) and \
                list(dev.reset_methods) != list(climb.dev.reset_methods):
            try:  # the stalled method's selection is still written
                self.writer.write(paths.device_file(address, "reset_method"), "default",
                                  address)
            except VfiodError as err:
                log.warning("%s: could not restore reset_method: %s", address, err)
            self.inventory.reread([address])
        error = exc.pending.error if isinstance(exc.pending, PendingWrite) else None
        if error is None:
            if self._check(address, rung, climb.expected, climb.failures):
                log.info("%s: the stalled %s returned; the device is healthy", address, rung)
                return self._healthy(address, rung, climb)
        elif isinstance(error, HostWriteError):
            took = time.time() - exc.pending.since if isinstance(exc.pending, PendingWrite) \
                else 0.0
            climb.failures.append(f"{_reset_failure(rung, error.errno)} after {took:.0f} s")
        else:
            climb.failures.append(f"{rung}: {error}")
        rest = climb.rungs[climb.rungs.index(rung) + 1:] if rung in climb.rungs else []
        log.info("%s: the stalled %s returned, the device is not healthy: climbing on "
                 "(%s)", address, rung, ", ".join(rest) or "no rung left")
        climb.rungs = rest
        climb.dev = self.inventory.device(address) or climb.dev
        return self._climb(climb.dev, fence, climb)

    def _own_methods(self, dev: PciDevice, failures: list[str], plan: list[str],
                     expected: Expected, tried: list[str],
                     refused: list[str]) -> str | None:
        """Try the function's own methods in *plan*, best first; the one that left it
        healthy, or None with why each failed added to *failures* (and the methods the
        kernel refused before resetting anything to *refused*)."""
        address, write = dev.address, self.writer.write
        # One listed method is already the selection: writing reset_method would make
        # the kernel probe it again (and refuse bus with EINVAL while a sibling function
        # shares the bus), and writing "default" afterwards would probe it away for good.
        selectable = len(plan) > 1 or list(plan) != list(dev.reset_methods)
        selected = False
        stalled = False
        try:
            for method in plan:
                tried.append(method)
                try:
                    progress.step(f"resetting {address} by {method}")
                    if selectable:
                        write(paths.device_file(address, "reset_method"), method, address)
                        selected = True
                    write(paths.device_file(address, "reset"), "1", address)
                except HostWriteTimeout:
                    stalled = True  # the device is the kernel's until it returns
                    raise
                except HostWriteError as exc:
                    failures.append(_reset_failure(method, exc.errno))
                    if exc.errno in (errno_mod.ENOTTY, errno_mod.EINVAL):
                        refused.append(method)
                    continue
                if self._check(address, method, expected, failures):
                    return method
            return None
        finally:
            if selected and not stalled:  # a refused selection leaves the kernel's as it was
                try:
                    write(paths.device_file(address, "reset_method"), "default", address)
                except VfiodError as exc:
                    log.warning("%s: could not restore reset_method: %s", address, exc)
            if not stalled:
                self.inventory.reread([address])

    @staticmethod
    def _slot(dev: PciDevice, devices: Mapping[str, PciDevice]) -> dict[str, PciDevice]:
        """Every function of the device's slot (``0000:06:00.*``), itself included."""
        slot = dev.address.rsplit(".", 1)[0]
        return {a: d for a, d in devices.items() if a.rsplit(".", 1)[0] == slot}

    def _rescan_obstacle(self, dev: PciDevice, slot: Mapping[str, PciDevice]) -> str | None:
        """Why the slot cannot be removed and rescanned now, or None when it can: every
        function of it on vfio-pci (ours; holders are fenced separately), none a
        bridge, and a rescan file for its bus."""
        what = f"remove and rescan of the slot {dev.address.rsplit('.', 1)[0]}"
        if dev.parent is None:
            # The root bus's rescan is the whole machine's: it would also bring back
            # anything anyone removed anywhere. Below a PCIe port the bus holds one slot.
            return f"{what}: it sits on the root bus, whose rescan rescans the whole machine"
        if any(d.is_bridge for d in slot.values()):
            return f"{what}: it holds a bridge; vfiod does not remove bridges"
        away = [d for d in slot.values() if not d.on_vfio]
        if away:
            return (f"{what} needs every function of it on vfio-pci: "
                    + _and([describe(d) for d in away]))
        if not self.host.exists(paths.pci_bus_file(bus_of(dev.address), "rescan")):
            return f"{what}: the kernel offers no rescan of bus {bus_of(dev.address)}"
        return None

    def _remove_rescan(self, dev: PciDevice, failures: list[str], fence: Fence | None,
                       expected: Expected, tried: list[str]) -> str | None:
        """Remove every function of the slot and rescan its bus, then put the functions
        back on vfio-pci; the rung's name when the device came back healthy there, else
        None with why added to *failures*.

        The kernel forgets driver_override on remove, and its rescan binds a re-added
        function to the first driver that matches, whatever drivers_autoprobe says
        (pci_bus_add_device attaches it itself: seen on 6.1 in the real-kernel tier).
        No write can come between the rescan and that probe, so a function the host
        driver took is moved back at once: driver_override, unbind, drivers_probe. Its
        IOMMU group may get a new number. The identity must be the one it had.
        """
        address = dev.address
        slot = self._slot(dev, self.inventory.reread(
            [a for a in self.inventory.devices() if a.rsplit(".", 1)[0]
             == address.rsplit(".", 1)[0]] + [address]))
        obstacle = self._rescan_obstacle(dev, slot)
        if obstacle is not None:
            failures.append(obstacle)
            return None
        fences = self._fence_bus(dev, slot, fence)  # InUse if a sibling's group is held
        tried.append(REMOVE_RESCAN)
        progress.step(f"removing and rescanning slot {address.rsplit('.', 1)[0]}")
        write = self.writer.write
        record = self.journal.begin_rescan(sorted(slot))
        taken: list[str] = []
        try:
            try:
                # Functions above 0 first: function 0 is what makes the slot.
                for a in sorted(slot, reverse=True):
                    write(paths.device_file(a, "remove"), "1", a)
                write(paths.pci_bus_file(bus_of(address), "rescan"), "1", address)
                taken = self._back_to_vfio([a for a in sorted(slot)
                                            if self.inventory.exists(a)], address)
            except HostWriteError as exc:
                failures.append(f"remove and rescan: {exc}")
                return None
            self.journal.end_rescan(record)
        finally:
            for f in fences:
                if f is not fence:
                    f.close()
            self.inventory.reread(list(slot))
        if taken:
            log.warning("%s: the rescan handed %s to the host driver for a moment; back "
                        "on vfio-pci", address, ", ".join(taken))
        missing = [a for a in sorted(slot) if not self.inventory.exists(a)]
        if missing:
            failures.append("remove and rescan: the rescan did not find "
                            + _and(missing) + " again")
            return None
        off = [a for a in sorted(slot) if self.writer.driver(a) != "vfio-pci"]
        if off:
            failures.append("remove and rescan: " + _and(off) + " did not bind to vfio-pci "
                            "again")
            return None
        rescanned = Expected(expected.vendor, expected.device, None, expected.aer_before)
        if not self._check(address, "remove and rescan", rescanned, failures):
            return None
        log.info("%s: came back by a remove and rescan of its slot (%s), on vfio-pci",
                 address, ", ".join(sorted(slot)))
        return REMOVE_RESCAN

    def _back_to_vfio(self, addresses: list[str], key: str) -> list[str]:
        """Put rescanned functions on vfio-pci: the override, an unbind from whatever
        driver the rescan gave them, a probe. Returns those a host driver had taken."""
        write = self.writer.write
        taken = []
        for a in addresses:
            write(paths.device_file(a, "driver_override"), "vfio-pci", a)
            driver = self.writer.driver(a)
            if driver is not None and driver != "vfio-pci":
                taken.append(f"{a} ({driver})")
                write(paths.device_file(a, "driver/unbind"), a, a)
        for a in addresses:
            if self.writer.driver(a) is None:
                write(paths.drivers_probe(), a, a)
        return taken

    def recover_rescans(self) -> list[str]:
        """Put right what a killed process left in a remove and rescan of this boot:
        the slot rescanned if it is still gone, and every function of it back on
        vfio-pci. Returns the addresses covered."""
        covered: list[str] = []
        for record in self.journal.unfinished_rescans():
            log.warning("finishing a remove and rescan of %s that a killed vfiod left",
                        ", ".join(record.members))
            try:
                if not all(self.inventory.exists(a) for a in record.members):
                    self.writer.write(paths.pci_bus_file(bus_of(record.key), "rescan"), "1",
                                      record.key)
                self._back_to_vfio([a for a in record.members if self.inventory.exists(a)],
                                   record.key)
            except HostWriteError as exc:
                log.error("could not finish the remove and rescan of %s: %s",
                          ", ".join(record.members), exc)
                self.inventory.record_error(record.members, f"a remove and rescan a killed "
                                            f"vfiod left could not be finished: {exc}")
                continue
            finally:
                self.inventory.reread(record.members)
            self.journal.end_rescan(record)
            covered += record.members
        return covered

    def bus_mates(self, address: str) -> list[str]:
        """The functions a hot reset through *address* would reset (itself included), as
        last read; empty when it has none (a root bus, or alone on its bus)."""
        return _bus_mates(self.inventory.devices(), address)

    def _hot_reset(self, dev: PciDevice, failures: list[str], fence: Fence | None,
                   expected: Expected, tried: list[str]) -> str | None:
        """Reset the device's whole bus through VFIO when its own methods cannot.

        A function's own bus reset fails while another shares its bus (a GPU and its
        HDMI audio), and the second function on such a bus has no reset of its own at
        all (a NIC on a PCI bus behind a PCIe-to-PCI bridge). VFIO's hot reset resets
        every function of the bus, given all their groups, so it needs all of them on
        vfio-pci and free. Returns "bus" when it worked; otherwise adds why to
        *failures* (naming the functions in the way and what to do) and returns None.
        *fence* is the device's own group, held already; every other group on the bus
        is fenced here, and a held one refuses the reset (InUse) at once.
        """
        address = dev.address
        bus = bus_of(address)
        if dev.parent is None:
            if not dev.reset_methods:
                failures.append(f"it sits on the root bus {bus}, which has no bridge above "
                                "it to reset")
            return None
        on_bus = self.inventory.reread(
            [a for a in self.inventory.devices() if bus_of(a) == bus] + [address])
        if len(on_bus) < 2:
            if not dev.reset_methods:
                failures.append(f"it is alone on bus {bus} and the kernel offers no bus "
                                "reset for it")
            return None  # alone on its bus: the kernel's own bus reset was the whole story
        obstacle = hot_reset_obstacle(dev, on_bus)
        if obstacle is not None:
            failures.append(obstacle)
            return None
        fences = self._fence_bus(dev, on_bus, fence)
        tried.append(HOT_RESET)
        try:
            progress.step(f"resetting bus {bus} by VFIO's hot reset")
            reset = self.host.vfio_hot_reset(address, {f.group: f.fd for f in fences})
        except HostWriteError as exc:
            failures.append(f"bus through VFIO hot reset: "
                            f"{errno_mod.errorcode.get(exc.errno, str(exc.errno))}")
            return None
        finally:
            for f in fences:
                if f is not fence:
                    f.close()
            self.inventory.reread(on_bus)
        if not self._check(address, "bus through VFIO hot reset", expected, failures):
            return None
        self.inventory.clear_errors(reset)
        log.info("%s: reset the bus %s through VFIO's hot reset (%s)", address, bus,
                 ", ".join(reset))
        return HOT_RESET

    def _fence_bus(self, dev: PciDevice, on_bus: Mapping[str, PciDevice],
                   fence: Fence | None) -> list[Fence]:
        """Open the node of every IOMMU group on the bus (the groups Engine.lock_keys
        names for a reset), reusing *fence* for the device's own; InUse, naming the
        holder, as soon as one is held (the ones opened so far are closed again)."""
        action = f"reset {dev.address} (they share bus {bus_of(dev.address)})"
        fences = [fence] if fence is not None else []
        groups: dict[int, PciDevice] = {}
        for d in sorted(on_bus.values(), key=lambda d: d.address):
            if d.iommu_group is not None and (fence is None or d.iommu_group != fence.group):
                groups.setdefault(d.iommu_group, d)
        try:
            for group in sorted(groups):
                other = raise_fence(self.inventory, groups[group], action)
                if other is not None:
                    fences.append(other)
                else:  # no node to open: /proc is all there is to ask
                    member = groups[group]
                    holders = self.inventory.scan_holders(self.inventory.nodes_of([member]))
                    check_not_held(self.inventory, member, action, holders)
        except BaseException:
            for f in fences:
                if f is not fence:
                    f.close()
            raise
        return fences
