"""Unbind of a bridge is refused like Bind: it would otherwise stand for its whole group."""

from __future__ import annotations

import pytest

from vfiod.engine import Engine
from vfiod.errors import InvalidArgument
from vfiod.sim import SimHost

from .placement import driver_of

BRIDGE = "0000:0c:00.0"  # PCIe-to-PCI bridge, in IOMMU group 41 with the cards behind it
FIREWIRE, PCI_NIC = "0000:0d:00.0", "0000:0d:01.0"
ROOT_PORT = "0000:00:03.0"


def test_unbind_of_a_bridge_whose_group_is_on_vfio_is_refused_and_moves_nothing(
        shared_engine: Engine, shared_host: SimHost) -> None:
    assert shared_engine.bind(PCI_NIC) == [FIREWIRE, PCI_NIC]
    writes = len(shared_host.write_log)
    with pytest.raises(InvalidArgument, match=f"{BRIDGE}: is a PCI bridge"):
        shared_engine.unbind(BRIDGE)
    assert driver_of(shared_host, FIREWIRE) == driver_of(shared_host, PCI_NIC) == "vfio-pci"
    assert len(shared_host.write_log) == writes


def test_unbind_of_a_bridge_says_to_name_a_device_of_its_group(shared_engine: Engine) -> None:
    shared_engine.bind(PCI_NIC)
    with pytest.raises(InvalidArgument, match="name a device of its IOMMU group"):
        shared_engine.unbind(BRIDGE, group=False)


def test_unbind_of_a_root_port_is_refused_like_its_bind(engine: Engine) -> None:
    with pytest.raises(InvalidArgument, match="bridge"):
        engine.bind(ROOT_PORT)
    with pytest.raises(InvalidArgument, match="bridge"):
        engine.unbind(ROOT_PORT)


def test_unbind_of_a_device_behind_the_bridge_still_moves_the_group(
        shared_engine: Engine, shared_host: SimHost) -> None:
    shared_engine.bind(PCI_NIC)
    assert shared_engine.unbind(FIREWIRE) == [FIREWIRE, PCI_NIC]
    assert driver_of(shared_host, PCI_NIC) == "r8169"
    assert driver_of(shared_host, BRIDGE) is None
