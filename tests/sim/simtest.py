"""Small helpers for the simulated host's tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vfiod.errors import HostWriteError
from vfiod.host.base import Host, UEvent
from vfiod.sim import SimHost

GPU = "0000:06:00.0"  # the guest's GTX 1080 Ti
AUDIO = "0000:06:00.1"  # its HDMI audio
DESKTOP_GPU = "0000:05:00.0"
NIC = "0000:00:19.0"
ASMEDIA = "0000:11:00.0"


def dev(address: str, attr: str = "") -> str:
    """/sys/bus/pci/devices/ADDRESS[/ATTR]."""
    return f"/sys/bus/pci/devices/{address}" + (f"/{attr}" if attr else "")


def write_errno(host: Host, path: str, value: str) -> int:
    """Write through the Host; 0 on success, else the errno the kernel gave."""
    try:
        host.write_attr(path, value, timeout=5.0)
    except HostWriteError as exc:
        return exc.errno
    return 0


def driver_of(host: Host, address: str) -> str | None:
    """The name of the driver the device is bound to, or None."""
    return host.link_name(dev(address, "driver"))


def to_vfio(host: Host, address: str) -> None:
    """The documented host -> vfio-pci sequence (kernel-facts.md, Binding)."""
    host.write_attr(dev(address, "driver_override"), "vfio-pci")
    if driver_of(host, address):
        host.write_attr(dev(address, "driver/unbind"), address)
    host.write_attr("/sys/bus/pci/drivers_probe", address)


def to_host(host: Host, address: str) -> None:
    """The documented way back: clear the override, unbind, reprobe."""
    host.write_attr(dev(address, "driver_override"), "\n")
    if driver_of(host, address):
        host.write_attr(dev(address, "driver/unbind"), address)
    host.write_attr("/sys/bus/pci/drivers_probe", address)


def summary(events: list[UEvent]) -> list[tuple[str, str, str | None]]:
    """(action, subsystem, DRIVER) of each event, for comparing orders."""
    return [(e.action, e.subsystem, e.driver) for e in events]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll *condition* until it holds or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


TEST_GUEST_NIC = "0000:02:00.0"  # the 6.1 test guest's e1000e, alone in IOMMU group 10


@contextmanager
def guest_nic_on_vfio() -> Iterator[SimHost]:
    """The simulated 6.1 test guest (no cdevs: a device fd is an anonymous inode) with
    its NIC on vfio-pci; closed afterwards."""
    host = SimHost(profile="test-guest")
    try:
        host.load_module("vfio-pci")
        to_vfio(host, TEST_GUEST_NIC)
        yield host
    finally:
        host.close()
