"""Reset: the kernel's reset methods, best first, then VFIO's hot reset of the whole bus.

A method that errs or leaves the device dead (config space all ones) is followed by
the next. A function without a method of its own (the second function on a shared
bus) goes straight to the hot reset. The hot reset is tried whenever the bus
qualifies: every function on it on vfio-pci and free; otherwise the failure names the
functions in the way. Refused while a guest holds the group (or any group on the bus,
for the hot reset), or while the host uses the device.

The fence: vfiod holds the device's group node through the reset, and for a hot reset
the node of every group on the bus, whose fds the hot reset uses (a second open of a
group is EBUSY). A reset write that outlives its timeout leaves the device busy until
the kernel returns; it is then checked in the background.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import threading
from collections.abc import Mapping

from vfiod.address import bus_of
from vfiod.engine import progress
from vfiod.engine.fence import Fence, raise_fence
from vfiod.engine.inventory import Inventory
from vfiod.engine.transactions import check_not_held, stall_reason
from vfiod.engine.writes import Writer
from vfiod.errors import HostWriteError, HostWriteTimeout, ResetFailed, Timeout, VfiodError
from vfiod.host.base import PendingWrite
from vfiod.guards import check_usages
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


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class Resetter:
    """Resets PCI functions and checks that they came back."""

    def __init__(self, inventory: Inventory, writer: Writer) -> None:
        self.inventory = inventory
        self.host = inventory.host
        self.writer = writer

    def reset(self, address: str, *, force: bool = False) -> str:
        """Reset a function (resolved already); return the method that worked.

        Its own methods first, best first; then, when they fail or it has none, VFIO's
        hot reset of its whole bus if the bus qualifies. The caller holds the locks of
        every group on the bus (Engine.lock_keys), as the hot reset resets them all.
        """
        dev, members = self.inventory.fresh(address)
        progress.step(f"making sure no guest holds {address}")
        fence = raise_fence(self.inventory, dev, "reset it")
        try:
            if fence is None:  # no group node: /proc is all there is to ask
                holders = self.inventory.scan_holders(self.inventory.nodes_of(members))
                check_not_held(self.inventory, dev, "reset it", holders)
            else:
                holders = self.inventory.scan_holders(self.inventory.nodes_of([dev]))
            if dev.driver and not dev.on_vfio:
                check_usages(self.host, [dev], force=force, action="reset it", holders=holders)
            try:
                return self._reset(dev, fence)
            except HostWriteTimeout as exc:
                self._stall(dev, fence, exc)
                fence = None  # the finisher holds it now
                raise Timeout(f"{exc}; {address} stays busy until the kernel returns, "
                              "then vfiod checks it by itself") from None
        finally:
            if fence is not None:
                fence.close()

    def _reset(self, dev: PciDevice, fence: Fence | None) -> str:
        """Its own methods, then the hot reset; the method that worked, or ResetFailed."""
        address = dev.address
        failures: list[str] = []
        worked = self._own_methods(dev, failures) if dev.reset_methods else None
        if worked is None:
            worked = self._hot_reset(dev, failures, fence)
        if worked is None:
            if dev.reset_methods:
                message = f"{address}: no reset method worked: " + "; ".join(failures)
            else:
                message = "; ".join([f"{address}: the kernel offers no reset method of its "
                                     "own for it", *failures])
            self.inventory.record_error([address], message)
            raise ResetFailed(message)
        self.inventory.clear_errors([address])
        return worked

    def _stall(self, dev: PciDevice, fence: Fence | None, exc: HostWriteTimeout) -> None:
        """Show the device busy until the stalled reset write returns; then check it
        (on a thread of its own) and tell the listener."""
        address = dev.address
        self.inventory.stall([address], stall_reason(self.inventory, exc, dev.iommu_group))

        def finish() -> None:
            try:
                if isinstance(exc.pending, PendingWrite):
                    exc.pending.wait()
                self.inventory.stall([address], "checking the device after the kernel "
                                     "returned from its reset", readable=True)
                self.inventory.reread([address])
                if self.config_alive(address):
                    self.inventory.clear_errors([address])
                    log.info("%s: the stalled reset returned; the device is alive", address)
                else:
                    self.inventory.record_error([address], f"{address}: the reset returned "
                                                "late and the device did not come back")
            finally:
                self.inventory.unstall([address])
                if fence is not None:
                    fence.close()
                self.inventory.notify([address])

        threading.Thread(target=finish, name=f"finish reset {address}", daemon=True).start()

    def _own_methods(self, dev: PciDevice, failures: list[str]) -> str | None:
        """Try the function's own methods, best first; the one that worked, or None with
        why each failed added to *failures*."""
        address, write = dev.address, self.writer.write
        # One listed method is already the selection: writing reset_method would make
        # the kernel probe it again (and refuse bus with EINVAL while a sibling function
        # shares the bus), and writing "default" afterwards would probe it away for good.
        selectable = len(dev.reset_methods) > 1
        selected = False
        stalled = False
        try:
            for method in dev.reset_methods:
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
                    continue
                if self.config_alive(address):
                    return method
                failures.append(f"{method}: the device did not come back "
                                "(config space reads all ones)")
            return None
        finally:
            if selected and not stalled:  # a refused selection leaves the kernel's as it was
                try:
                    write(paths.device_file(address, "reset_method"), "default", address)
                except VfiodError as exc:
                    log.warning("%s: could not restore reset_method: %s", address, exc)
            if not stalled:
                self.inventory.reread([address])

    def bus_mates(self, address: str) -> list[str]:
        """The functions a hot reset through *address* would reset (itself included), as
        last read; empty when it has none (a root bus, or alone on its bus)."""
        devices = self.inventory.devices()
        dev = devices.get(address)
        if dev is None or dev.parent is None:
            return []  # no bridge above a root bus: nothing resets it as a whole
        bus = bus_of(address)
        mates = sorted(a for a in devices if bus_of(a) == bus)
        return mates if len(mates) > 1 else []

    def _hot_reset(self, dev: PciDevice, failures: list[str],
                   fence: Fence | None = None) -> str | None:
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
        if not self.config_alive(address):
            failures.append("bus through VFIO hot reset: the device did not come back "
                            "(config space reads all ones)")
            return None
        self.inventory.clear_errors(reset)
        log.info("%s: reset the bus %s through VFIO's hot reset (%s)", address, bus,
                 ", ".join(reset))
        return "bus"

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

    def config_alive(self, address: str) -> bool:
        """False when the function's config space reads all ones (it did not come back)."""
        data = self.host.read_bytes(paths.device_file(address, "config"), 2)
        return not (data is not None and data == b"\xff\xff")
