"""Typed fields for records vfiod reads back from disk, checked before any path is built.

The state directory is trusted no further than its validators: a journal entry whose
address is ``../../../../etc/target`` must fail here, not become a path under /sys.
Each type is a pydantic ``Annotated`` str whose validator refuses anything else.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from vfiod.address import is_address

# Kernel driver names as they appear under /sys/bus/pci/drivers (vfio-pci,
# snd_hda_intel, e1000e): no slash, never "." or "..", at most a modest length.
_DRIVER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
# /proc/sys/kernel/random/boot_id: a UUID in lower-case hex.
_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_pci_address(value: str) -> str:
    """A full PCI address as the kernel writes it (``0000:06:00.0``), nothing else."""
    if not is_address(value):
        raise ValueError(f"not a PCI address: {value[:40]!r}")
    return value


def check_driver_name(value: str) -> str:
    """A PCI driver's name: one path element at most, never a way out of its folder."""
    if _DRIVER.fullmatch(value) is None or value in (".", ".."):
        raise ValueError(f"not a driver name: {value[:40]!r}")
    return value


def check_boot_id(value: str) -> str:
    """The kernel's boot id: a UUID."""
    if _BOOT_ID.fullmatch(value) is None:
        raise ValueError(f"not a boot id: {value[:40]!r}")
    return value


#: ``0000:06:00.0``.
PciAddress = Annotated[str, AfterValidator(check_pci_address)]
#: ``vfio-pci``, ``snd_hda_intel``.
DriverName = Annotated[str, AfterValidator(check_driver_name)]
#: What ``driver_override`` held: a driver name (``none`` included), or None for none.
Override = DriverName | None
#: The boot a record belongs to.
BootId = Annotated[str, AfterValidator(check_boot_id)]
