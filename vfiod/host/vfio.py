"""VFIO's hot reset on the real kernel: the ioctls of linux/vfio.h, through fcntl.ioctl.

A GPU's only reset is a secondary bus reset, which the kernel refuses per function while
its HDMI audio shares the bus. VFIO resets the whole bus instead when the caller proves
it owns every affected device: it opens the device's group and a device fd, asks which
devices the reset affects (VFIO_DEVICE_GET_PCI_HOT_RESET_INFO), and hands the group fds
of all of them to VFIO_DEVICE_PCI_HOT_RESET. This is what QEMU and libvirt do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Mapping

_VFIO_TYPE = ord(";")
_VFIO_BASE = 100


def _io(nr: int) -> int:
    """_IO(VFIO_TYPE, VFIO_BASE + nr): VFIO's ioctls carry no size in their number."""
    return (_VFIO_TYPE << 8) | (_VFIO_BASE + nr)


VFIO_SET_IOMMU = _io(2)
VFIO_GROUP_GET_STATUS = _io(3)
VFIO_GROUP_SET_CONTAINER = _io(4)
VFIO_GROUP_GET_DEVICE_FD = _io(6)
VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = _io(12)
VFIO_DEVICE_PCI_HOT_RESET = _io(13)
VFIO_TYPE1_IOMMU = 1
VFIO_TYPE1v2_IOMMU = 3
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
CONTAINER_PATH = "/dev/vfio/vfio"

#: struct vfio_pci_hot_reset_info's header: argsz, flags, count (three u32).
_INFO_HEADER = struct.Struct("=III")
#: struct vfio_pci_dependent_device: group_id u32, segment u16, bus u8, devfn u8.
_DEPENDENT = struct.Struct("=IHBB")
#: Room for this many dependent devices in the first HOT_RESET_INFO call.
_FIRST_GUESS = 32


class VfioError(OSError):
    """An ioctl or open failed; ``node`` is the /dev/vfio path it concerned."""

    def __init__(self, err: int, node: str) -> None:
        super().__init__(err, os.strerror(err), node)
        self.node = node


def _group_path(group: int) -> str:
    return f"/dev/vfio/{group}"


def _check_viable(fd: int) -> None:
    """Raise EPERM unless the group is viable (every endpoint on a VFIO driver).

    A non-viable group opens fine but SET_CONTAINER fails EPERM; saying so here names
    the group instead.
    """
    status = bytearray(struct.pack("=II", 8, 0))
    fcntl.ioctl(fd, VFIO_GROUP_GET_STATUS, status, True)
    _argsz, flags = struct.unpack("=II", status)
    if not flags & VFIO_GROUP_FLAGS_VIABLE:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))


def _open_group(real_dev_vfio: str, group: int) -> int:
    """Open a group node and check it is viable."""
    fd = os.open(f"{real_dev_vfio}/{group}", os.O_RDWR | os.O_CLOEXEC)
    try:
        _check_viable(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _attach(group_fd: int, container: int, first: bool) -> None:
    """Add a group to the container; the first one also chooses the IOMMU model."""
    fcntl.ioctl(group_fd, VFIO_GROUP_SET_CONTAINER, bytearray(struct.pack("=i", container)), True)
    if first:
        try:
            fcntl.ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)
        except OSError:
            # Older IOMMU drivers know only the first type1 model.
            fcntl.ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU)


def _hot_reset_info(device_fd: int) -> list[tuple[int, str]]:
    """[(group, address)] of every device a hot reset through *device_fd* affects."""
    room = _FIRST_GUESS
    while True:
        size = _INFO_HEADER.size + room * _DEPENDENT.size
        buf = bytearray(size)
        _INFO_HEADER.pack_into(buf, 0, size, 0, 0)
        try:
            fcntl.ioctl(device_fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf, True)
        except OSError as exc:
            # ENOSPC: the kernel wrote the count it needs into the header.
            needed = _INFO_HEADER.unpack_from(buf, 0)[2]
            if exc.errno == errno.ENOSPC and needed > room:
                room = needed
                continue
            raise
        count = _INFO_HEADER.unpack_from(buf, 0)[2]
        found = []
        for i in range(count):
            group, segment, bus, devfn = _DEPENDENT.unpack_from(
                buf, _INFO_HEADER.size + i * _DEPENDENT.size)
            found.append((group, f"{segment:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"))
        return found


def hot_reset(real_dev_vfio: str, group: int, address: str,
              held: Mapping[int, int] | None = None) -> list[str]:
    """Reset the bus below *address*'s parent bridge through VFIO; return who was reset.

    *real_dev_vfio* is the real path of ``/dev/vfio``. *held* are group fds the caller
    holds open already (its fence), by group: they are used, not reopened (a second
    open fails EBUSY) and not closed. Everything this opens is closed before
    returning: vfio-pci resets the devices again when their last fd closes, which is
    harmless. Raises VfioError naming the group node an errno concerned.
    """
    held = dict(held or {})
    fds: list[int] = []
    node = _group_path(group)

    def group_fd_of(number: int) -> int:
        if number in held:
            _check_viable(held[number])
            return held[number]
        fd = _open_group(real_dev_vfio, number)
        fds.append(fd)
        return fd

    try:
        container = os.open(f"{real_dev_vfio}/vfio", os.O_RDWR | os.O_CLOEXEC)
        fds.append(container)
        group_fd = group_fd_of(group)
        _attach(group_fd, container, first=True)
        device_fd = fcntl.ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD,
                                bytearray(address.encode() + b"\0"), True)
        fds.append(device_fd)
        affected = _hot_reset_info(device_fd)
        group_fds = {group: group_fd}
        for other, _ in affected:
            if other not in group_fds:
                node = _group_path(other)
                other_fd = group_fd_of(other)
                _attach(other_fd, container, first=False)
                group_fds[other] = other_fd
        node = _group_path(group)
        fd_list = list(group_fds.values())
        request = bytearray(_INFO_HEADER.size + 4 * len(fd_list))
        _INFO_HEADER.pack_into(request, 0, len(request), 0, len(fd_list))
        struct.pack_into(f"={len(fd_list)}i", request, _INFO_HEADER.size, *fd_list)
        fcntl.ioctl(device_fd, VFIO_DEVICE_PCI_HOT_RESET, request, True)
        return sorted(a for _, a in affected)
    except VfioError:
        raise
    except OSError as exc:
        raise VfioError(exc.errno or errno.EIO, node) from None
    finally:
        # Newest first: the device fd before its group, the container last.
        for fd in reversed(fds):
            try:
                os.close(fd)
            except OSError:
                pass
