"""VFIO's hot reset on the real kernel: the GPU-like slot reset as one, through vfiod.

The VGA function's only method is ``bus``, which the kernel refuses per function while
the HDA function shares the bus (test_reset.py). With both functions on vfio-pci, vfiod
resets the bus through VFIO_DEVICE_PCI_HOT_RESET instead. No ``reset_method`` is
written (the VGA lists one method), so the slot is left as it booted.
"""

from __future__ import annotations

from vfiod.host.real import RealHost

from .. import layout
from . import pci
from .daemon import GuestVfiod, returned

VGA, HDA = layout.VGA, layout.HDA
SLOT = [VGA, HDA]


def config_alive(host: RealHost, address: str) -> bool:
    """The function answers config reads (a dead one reads all ones)."""
    vendor = host.read_bytes(pci.attr(address, "config"), 2)
    return vendor is not None and vendor != b"\xff\xff"


def test_reset_of_the_vga_with_its_slot_on_vfio_is_a_bus_reset_through_vfio(
        host: RealHost, guest_vfiod: GuestVfiod) -> None:
    methods = host.read_text(pci.attr(VGA, "reset_method"))
    assert returned(guest_vfiod.call("Bind", "sa{sv}", VGA, "1", "force", "b", "true")) == SLOT
    assert returned(guest_vfiod.call("Reset", "sa{sv}", VGA, "0")) == "bus"
    assert [pci.driver_of(host, a) for a in SLOT] == ["vfio-pci", "vfio-pci"]
    assert all(config_alive(host, a) for a in SLOT)
    status = guest_vfiod.status()
    assert [status[a]["state"] for a in SLOT] == ["vfio", "vfio"]
    assert host.read_text(pci.attr(VGA, "reset_method")) == methods


def test_reset_of_the_hda_function_without_a_reset_file_is_a_bus_reset_through_vfio(
        host: RealHost, guest_vfiod: GuestVfiod) -> None:
    # The kernel offers the second function of the slot no method at all (no reset
    # file); VFIO's hot reset of the bus reaches it all the same.
    assert not host.exists(pci.attr(HDA, "reset"))
    assert returned(guest_vfiod.call("Bind", "sa{sv}", HDA, "1", "force", "b", "true")) == SLOT
    assert returned(guest_vfiod.call("Reset", "sa{sv}", HDA, "0")) == "bus"
    assert [pci.driver_of(host, a) for a in SLOT] == ["vfio-pci", "vfio-pci"]
    assert all(config_alive(host, a) for a in SLOT)
    status = guest_vfiod.status()
    assert [status[a]["state"] for a in SLOT] == ["vfio", "vfio"]
