"""Reset: the kernel's reset methods, best first, then VFIO's hot reset of the whole bus.

A method that errs or leaves the device dead (config space all ones) is followed by
the next. Refused while a guest holds the group (the fence: vfiod holds the group node
through the reset, and the hot reset uses that fd), or while the host uses the device.
A reset write that outlives its timeout leaves the device busy until the kernel
returns; it is then checked in the background.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import threading

from vfiod.address import bus_of
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

SLOT_HINT = "bind the whole slot (the GPU and its audio) to vfio-pci to reset it together"


def _reset_failure(method: str, err: int) -> str:
    """``bus: ENOTTY (another function shares the bus)``: one method's failure, explained."""
    name = errno_mod.errorcode.get(err, str(err))
    if method == "bus" and err in (errno_mod.ENOTTY, errno_mod.EINVAL):
        # ENOTTY from the reset, EINVAL when selecting it: the kernel's bus-reset probe
        # fails while other functions sit on the same bus.
        return f"{method}: {name} (another function shares the bus)"
    return f"{method}: {name}"


class Resetter:
    """Resets PCI functions and checks that they came back."""

    def __init__(self, inventory: Inventory, writer: Writer) -> None:
        self.inventory = inventory
        self.host = inventory.host
        self.writer = writer

    def reset(self, address: str, *, force: bool = False) -> str:
        """Reset a function (resolved already); return the method that worked."""
        dev, members = self.inventory.fresh(address)
        fence = raise_fence(self.inventory, dev, "reset it")
        try:
            if fence is None:  # no group node: /proc is all there is to ask
                holders = self.inventory.scan_holders(self.inventory.nodes_of(members))
                check_not_held(self.inventory, dev, "reset it", holders)
            else:
                holders = self.inventory.scan_holders(self.inventory.nodes_of([dev]))
            if dev.driver and not dev.on_vfio:
                check_usages(self.host, [dev], force=force, action="reset it", holders=holders)
            if not dev.reset_methods:
                raise ResetFailed(f"{address}: the kernel offers no reset method for this "
                                  "device")
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
        address = dev.address
        write = self.writer.write
        # One listed method is already the selection: writing reset_method would make
        # the kernel probe it again (and refuse bus with EINVAL while a sibling function
        # shares the bus), and writing "default" afterwards would probe it away for good.
        selectable = len(dev.reset_methods) > 1
        selected = False
        failures: list[str] = []
        worked: str | None = None
        stalled = False
        try:
            for method in dev.reset_methods:
                try:
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
                    worked = method
                    break
                failures.append(f"{method}: the device did not come back "
                                "(config space reads all ones)")
        finally:
            if selected and not stalled:  # a refused selection leaves the kernel's as it was
                try:
                    write(paths.device_file(address, "reset_method"), "default", address)
                except VfiodError as exc:
                    log.warning("%s: could not restore reset_method: %s", address, exc)
            if not stalled:
                self.inventory.reread([address])
        if worked is None:
            worked = self._hot_reset(dev, failures, fence)
        if worked is None:
            message = f"{address}: no reset method worked: " + "; ".join(failures)
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

    def _hot_reset(self, dev: PciDevice, failures: list[str],
                   fence: Fence | None = None) -> str | None:
        """Reset the device's whole bus through VFIO when the kernel refused it alone.

        A GPU's bus reset fails per function while its HDMI audio shares the bus; VFIO's
        hot reset resets every function of the bus, given all their groups, so it needs
        all of them on vfio-pci and free. Returns "bus" when it worked; otherwise adds
        why to *failures* (with what to do about it) and returns None.
        """
        address = dev.address
        bus = bus_of(address)
        on_bus = self.inventory.reread(
            [a for a in self.inventory.devices() if bus_of(a) == bus])
        if len(on_bus) < 2:
            return None  # alone on its bus: the kernel's own bus reset was the whole story
        if not all(d.on_vfio for d in on_bus.values()):
            failures.append(SLOT_HINT)
            return None
        others: dict[int, PciDevice] = {}
        for d in on_bus.values():
            if d.iommu_group is not None and d.iommu_group != dev.iommu_group:
                others.setdefault(d.iommu_group, d)
        if others:
            holders = self.inventory.scan_holders(self.inventory.nodes_of(others.values()))
            for group in sorted(others):
                check_not_held(self.inventory, others[group],
                               f"reset {address} (they share a bus)", holders)
        try:
            # The fence holds the device's group open: a second open would be EBUSY.
            reset = self.host.vfio_hot_reset(
                address, {fence.group: fence.fd} if fence is not None else None)
        except HostWriteError as exc:
            failures.append(f"bus through VFIO hot reset: "
                            f"{errno_mod.errorcode.get(exc.errno, str(exc.errno))}")
            return None
        finally:
            self.inventory.reread(on_bus)
        if not self.config_alive(address):
            failures.append("bus through VFIO hot reset: the device did not come back "
                            "(config space reads all ones)")
            return None
        self.inventory.clear_errors(reset)
        log.info("%s: reset the bus %s through VFIO's hot reset (%s)", address, bus,
                 ", ".join(reset))
        return "bus"

    def config_alive(self, address: str) -> bool:
        """False when the function's config space reads all ones (it did not come back)."""
        data = self.host.read_bytes(paths.device_file(address, "config"), 2)
        return not (data is not None and data == b"\xff\xff")
