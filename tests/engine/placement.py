"""Where devices are (driver, driver_override), and the errno values to inject.

Faults themselves come from the simulated host (``sim.faults``): ``fail_at(n, err)``
makes the n-th write from now fail, ``crash_before(n)`` / ``crash_after(n)`` stand for
the process being killed around it (SimulatedCrash, which nothing may catch).
"""

from __future__ import annotations

import errno

from vfiod.host.base import Host


def driver_of(host: Host, address: str) -> str | None:
    """The driver the kernel shows for a device right now."""
    return host.link_name(f"/sys/bus/pci/devices/{address}/driver")


def override_of(host: Host, address: str) -> str | None:
    """driver_override as the kernel shows it, None for "(null)"."""
    text = host.read_text(f"/sys/bus/pci/devices/{address}/driver_override")
    return None if text in (None, "", "(null)") else text


def placement(host: Host, addresses: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """(driver, driver_override) of each device."""
    return {a: (driver_of(host, a), override_of(host, a)) for a in addresses}


#: The errno values kernel-facts.md records for bad writes, plus a generic I/O error.
KERNEL_ERRNOS = (errno.ENODEV, errno.ENOENT, errno.EBUSY, errno.EINVAL, errno.EIO)
