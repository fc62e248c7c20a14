"""The few VFIO ioctls a guest holder needs (linux/vfio.h), through fcntl.ioctl.

Enough to play QEMU's part: open a group, attach it to a container with the type1
IOMMU, and take a device fd, which is what makes the kernel's ``unbind`` block.
"""

from __future__ import annotations

import fcntl
import os
import struct

from ..marker import GUEST_MARKER, in_test_guest

if not in_test_guest():  # holding devices is for the test guest only
    raise RuntimeError(f"tests.vm.guest.vfio_api runs only in the test guest ({GUEST_MARKER})")

_VFIO_TYPE = ord(";")
_VFIO_BASE = 100


def _io(nr: int) -> int:
    """_IO(VFIO_TYPE, VFIO_BASE + nr): VFIO's ioctls carry no size in their number."""
    return (_VFIO_TYPE << 8) | (_VFIO_BASE + nr)


VFIO_GET_API_VERSION = _io(0)
VFIO_SET_IOMMU = _io(2)
VFIO_GROUP_GET_STATUS = _io(3)
VFIO_GROUP_SET_CONTAINER = _io(4)
VFIO_GROUP_GET_DEVICE_FD = _io(6)
VFIO_TYPE1v2_IOMMU = 3
GROUP_FLAGS_VIABLE = 1 << 0
CONTAINER_PATH = "/dev/vfio/vfio"


def open_group(group: int) -> int:
    """Open /dev/vfio/<group> (EBUSY when another process has it open)."""
    return os.open(f"/dev/vfio/{group}", os.O_RDWR | os.O_CLOEXEC)


def group_viable(group_fd: int) -> bool:
    """VFIO_GROUP_GET_STATUS: are all endpoints of the group on a VFIO driver?"""
    buf = bytearray(struct.pack("II", 8, 0))
    fcntl.ioctl(group_fd, VFIO_GROUP_GET_STATUS, buf, True)
    _argsz, flags = struct.unpack("II", buf)
    return bool(flags & GROUP_FLAGS_VIABLE)


def attach_container(group_fd: int) -> int:
    """Open the container, add the group (EPERM when not viable), set the type1 IOMMU."""
    container = os.open(CONTAINER_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(group_fd, VFIO_GROUP_SET_CONTAINER,
                    bytearray(struct.pack("i", container)), True)
        fcntl.ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)
    except OSError:
        os.close(container)
        raise
    return container


def device_fd(group_fd: int, address: str) -> int:
    """VFIO_GROUP_GET_DEVICE_FD for one device of an attached group."""
    return fcntl.ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD,
                       bytearray(address.encode() + b"\0"), True)
