"""The guest's PCI layout and IOMMU groups, as the emulated Intel IOMMU makes them."""

from __future__ import annotations

import pytest

from vfiod.host.real import RealHost

from .. import layout
from . import pci

# vendor:device of what QEMU emulates for each role.
IDS = {
    "vga": "1234:1111",
    "hda": "8086:2668",
    "nic": "8086:10d3",
    "xhci": "1b36:000d",
    "virtio_gpu": "1af4:1050",
    "ahci": "8086:2922",
}
HOST_DRIVERS = {
    "vga": "bochs-drm",
    "hda": "snd_hda_intel",
    "nic": "e1000e",
    "xhci": "xhci_hcd",
    "virtio_gpu": "virtio-pci",
    "ahci": "ahci",
}


def ids_of(host: RealHost, address: str) -> str:
    vendor = host.read_int(pci.attr(address, "vendor"), 16)
    device = host.read_int(pci.attr(address, "device"), 16)
    return f"{vendor:04x}:{device:04x}"


@pytest.mark.parametrize("role", sorted(IDS))
def test_layout_device_is_at_its_documented_address(host: RealHost, role: str) -> None:
    assert ids_of(host, layout.address(role)) == IDS[role]


@pytest.mark.parametrize("role", sorted(HOST_DRIVERS))
def test_layout_device_boots_on_its_host_driver(host: RealHost, role: str) -> None:
    assert pci.driver_of(host, layout.address(role)) == HOST_DRIVERS[role]


def test_iommu_is_on(host: RealHost) -> None:
    assert host.listdir("/sys/class/iommu"), "no IOMMU registered"
    assert host.listdir("/sys/kernel/iommu_groups")


def test_gpu_like_slot_shares_one_iommu_group(host: RealHost) -> None:
    group = pci.group_of(host, layout.VGA)
    assert pci.group_of(host, layout.HDA) == group
    assert pci.group_members(host, group) == sorted([layout.VGA, layout.HDA])


@pytest.mark.parametrize("role", ["nic", "xhci", "virtio_gpu", "ahci"])
def test_single_function_device_is_alone_in_its_group(host: RealHost, role: str) -> None:
    address = layout.address(role)
    assert pci.group_members(host, pci.group_of(host, address)) == [address]


def test_root_ports_are_on_pcieport_in_groups_of_their_own(host: RealHost) -> None:
    endpoint_groups = {pci.group_of(host, a) for a in layout.ALL_FUNCTIONS}
    for port in layout.PORTS:
        assert pci.driver_of(host, port.address) == "pcieport"
        group = pci.group_of(host, port.address)
        assert group not in endpoint_groups
        assert pci.group_members(host, group) == [port.address]
