"""Steps on the guest's real PCI devices, each through RealHost (test guest only).

The guest tests use these to set up a scenario; the fact under test is then checked
with RealHost directly, so each test shows the write it is about.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from vfiod.host.real import RealHost

from ..marker import GUEST_MARKER, in_test_guest

if not in_test_guest():  # these helpers unbind devices: never on a host
    raise RuntimeError(f"tests.vm.guest.pci runs only in the test guest ({GUEST_MARKER})")

DEVICES = "/sys/bus/pci/devices"
DRIVERS = "/sys/bus/pci/drivers"
DRIVERS_PROBE = "/sys/bus/pci/drivers_probe"
VFIO_PCI = "vfio-pci"


def attr(address: str, name: str) -> str:
    """The host path of one of a device's sysfs attributes."""
    return f"{DEVICES}/{address}/{name}"


def driver_of(host: RealHost, address: str) -> str | None:
    """The driver bound to the device now, or None."""
    return host.link_name(attr(address, "driver"))


def override_of(host: RealHost, address: str) -> str | None:
    """The device's driver_override, or None when unset (the kernel shows "(null)")."""
    text = host.read_text(attr(address, "driver_override"))
    return None if text in (None, "(null)", "") else text


def group_of(host: RealHost, address: str) -> int:
    """The device's IOMMU group number."""
    name = host.link_name(attr(address, "iommu_group"))
    assert name is not None, f"{address} has no IOMMU group"
    return int(name)


def group_members(host: RealHost, group: int) -> list[str]:
    """Every device address in an IOMMU group, sorted."""
    return host.listdir(f"/sys/kernel/iommu_groups/{group}/devices")


def unbind(host: RealHost, address: str) -> None:
    """Unbind the device from whatever driver it has (nothing when it has none)."""
    if driver_of(host, address) is not None:
        host.write_attr(attr(address, "driver/unbind"), address)


def bind_to_vfio(host: RealHost, address: str) -> None:
    """Host driver -> vfio-pci, the kernel-facts way: override, unbind, drivers_probe."""
    host.write_attr(attr(address, "driver_override"), VFIO_PCI)
    unbind(host, address)
    host.write_attr(DRIVERS_PROBE, address)


def return_to_host(host: RealHost, address: str) -> None:
    """Back to the kernel's best match: empty override, unbind, drivers_probe."""
    host.write_attr(attr(address, "driver_override"), "\n")
    unbind(host, address)
    host.write_attr(DRIVERS_PROBE, address)


def load_vfio_pci(host: RealHost) -> None:
    """Make sure vfio-pci is loaded."""
    if not host.module_loaded(VFIO_PCI):
        host.load_module(VFIO_PCI)


def unload_vfio_pci() -> None:
    """Unload vfio-pci (no device may be bound to it): the "not yet loaded" scenarios."""
    subprocess.run(["modprobe", "-r", "vfio_pci"], check=True, capture_output=True,
                   timeout=60)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0,
               interval: float = 0.02) -> bool:
    """Poll *condition* until it holds or *timeout* passes; its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(interval)
    return True
