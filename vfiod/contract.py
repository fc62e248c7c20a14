"""The fixed names of vfiod's contract (DESIGN.md): bus name, object paths, config path.

Defined once here, for the daemon, vfioctl, the libvirt hook and the test tools alike.
Pure constants and string functions: importing this costs nothing.
"""

from __future__ import annotations

BUS_NAME = "org.vfiod1"
MANAGER_PATH = "/org/vfiod1"
MANAGER_INTERFACE = "org.vfiod1.Manager"
DEVICE_INTERFACE = "org.vfiod1.Device"
DEVICE_PATH_PREFIX = MANAGER_PATH + "/device/"
DEFAULT_CONFIG_PATH = "/etc/vfiod/vfiod.toml"
JOB_INTERFACE = "org.vfiod1.Job"
JOB_PATH_PREFIX = MANAGER_PATH + "/job/"


def job_path(number: int) -> str:
    """``7`` -> ``/org/vfiod1/job/7``."""
    return f"{JOB_PATH_PREFIX}{number}"


def device_path(address: str) -> str:
    """``0000:06:00.0`` -> ``/org/vfiod1/device/pci_0000_06_00_0``."""
    return DEVICE_PATH_PREFIX + "pci_" + address.replace(":", "_").replace(".", "_")


def address_from_path(path: str) -> str | None:
    """``/org/vfiod1/device/pci_0000_06_00_0`` -> ``0000:06:00.0``; None for others."""
    tail = path.rsplit("/", 1)[-1]
    parts = tail.split("_")
    if len(parts) != 5 or parts[0] != "pci":
        return None
    _, domain, bus, slot, function = parts
    return f"{domain}:{bus}:{slot}.{function}"
