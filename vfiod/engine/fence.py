"""The group node as the fence: vfiod opens ``/dev/vfio/N`` itself before it detaches or
resets a device of the group, and keeps it open until the operation is over.

The kernel grants a group to one opener at a time, so the open is the kernel's own
answer to "does a guest hold it": EBUSY whether the guest holds the group node, a
device fd it got through it (also after closing the group fd, or received over a
socket), or the device's iommufd cdev. Held open, the fence also keeps any guest from
opening the group half-way through the operation. /proc is read only to name the
holder for the refusal.
"""

from __future__ import annotations

import errno
import logging
import threading

from vfiod.engine import progress
from vfiod.engine.inventory import Inventory
from vfiod.errors import Failed, InUse
from vfiod.host import paths
from vfiod.model import PciDevice

log = logging.getLogger("vfiod.engine")


class Fence:
    """vfiod's own open of one IOMMU group's node; ``close()`` lets guests in again."""

    def __init__(self, inventory: Inventory, group: int, fd: int) -> None:
        self.inventory = inventory
        self.group = group
        self.fd = fd
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Let go of the group (once; later calls do nothing)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.inventory.host.close_group(self.fd)
        except OSError as exc:
            log.warning("closing /dev/vfio/%d: %s", self.group, exc)

    def __enter__(self) -> Fence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raise_fence(inventory: Inventory, dev: PciDevice, action: str) -> Fence | None:
    """Open *dev*'s group node for vfiod; raise InUse, naming the holder, when held
    (after waiting for it to let go, when the operation has a ``wait``:
    vfiod.engine.progress).

    Returns None when there is nothing to fence: the device has no group, or no member
    is on vfio-pci (the node exists only then), so no guest can hold it.
    """
    return progress.wait_for_holders(lambda: _open_fence(inventory, dev, action),
                                     lambda _err: _holding(inventory, dev))


def _holding(inventory: Inventory, dev: PciDevice) -> str:
    """What an operation waits for: ``qemu-system-x86 (pid 4242) to release 0000:06:00.0``."""
    group = dev.iommu_group
    if group is None:
        return f"the guest to release {dev.address}"
    members = inventory.scanner.group_members(group)
    nodes = [paths.group_node(group)] + [n for a in members for n in inventory.cdev_nodes(a)]
    found = inventory.scan_holders([*nodes, paths.VFIO_DEVICE_FD])
    procs = {p.pid: p for node in [*nodes, paths.VFIO_DEVICE_FD] for p in found.get(node, [])}
    who = ", ".join(map(str, procs.values())) or "a process vfiod cannot see"
    return f"{who} to release {dev.address}"


def _open_fence(inventory: Inventory, dev: PciDevice, action: str) -> Fence | None:
    group = dev.iommu_group
    if group is None or not inventory.host.exists(paths.group_node(group)):
        return None
    try:
        fd = inventory.host.open_group(group)
    except FileNotFoundError:
        return None  # the last member left vfio-pci meanwhile
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            who = inventory.name_vfio_holders(group)
            raise InUse(f"{dev.address}: refusing to {action}: IOMMU group {group} is in "
                        f"use by {who}") from None
        raise Failed(f"{dev.address}: cannot open {paths.group_node(group)} to make sure "
                     f"no guest holds it: {exc.strerror or exc}") from None
    return Fence(inventory, group, fd)
