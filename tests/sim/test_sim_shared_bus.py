"""seed-x99-shared-bus: buses that several functions, or several IOMMU groups, share."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest
from simtest import dev, driver_of, to_vfio, write_errno

from vfiod.errors import HostWriteError
from vfiod.sim import PROFILES, SimHost

BRIDGE = "0000:0c:00.0"  # ASM1083 PCIe-to-PCI bridge
FIREWIRE, PCI_NIC = "0000:0d:00.0", "0000:0d:01.0"  # its conventional PCI bus, group 41
PORT0, PORT1 = "0000:0e:00.0", "0000:0e:00.1"  # 82576 ports: one bus, groups 42 and 43


@pytest.fixture
def sim() -> Iterator[SimHost]:
    host = SimHost(profile="seed-x99-shared-bus")
    try:
        yield host
    finally:
        host.close()


def test_the_variant_keeps_every_function_of_seed_x99_as_it_is() -> None:
    seed = {d.address: d for d in PROFILES["seed-x99"].devices}
    variant = {d.address: d for d in PROFILES["seed-x99-shared-bus"].devices}
    assert {a: variant[a] for a in seed} == seed


def test_the_pcie_to_pci_bridge_has_no_driver_and_shares_the_cards_group(sim: SimHost) -> None:
    assert driver_of(sim, BRIDGE) is None
    groups = {a: sim.link_name(dev(a, "iommu_group")) for a in (BRIDGE, FIREWIRE, PCI_NIC)}
    assert set(groups.values()) == {"41"}


def test_the_second_function_on_a_shared_bus_has_no_reset_file(sim: SimHost) -> None:
    assert sim.read_text(dev(FIREWIRE, "reset_method")) == "bus"
    assert not sim.exists(dev(PCI_NIC, "reset"))
    assert not sim.exists(dev(PORT1, "reset"))


def test_a_bus_reset_of_one_function_fails_while_another_shares_the_bus(sim: SimHost) -> None:
    assert write_errno(sim, dev(FIREWIRE, "reset"), "1") == errno.ENOTTY


def test_the_dual_port_nic_has_one_bus_and_two_groups(sim: SimHost) -> None:
    assert {sim.link_name(dev(a, "iommu_group")) for a in (PORT0, PORT1)} == {"42", "43"}


def test_a_hot_reset_through_the_nic_without_a_reset_file_resets_its_bus(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    for address in (FIREWIRE, PCI_NIC):
        to_vfio(sim, address)
    sim.kernel.kill_device(FIREWIRE)
    assert sim.vfio_hot_reset(PCI_NIC) == [FIREWIRE, PCI_NIC]
    assert sim.read_bytes(dev(FIREWIRE, "config"), 2) == b"\x06\x11"


def test_a_hot_reset_needs_every_group_on_the_bus_on_vfio_pci(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    to_vfio(sim, PORT0)
    with pytest.raises(HostWriteError) as failure:
        sim.vfio_hot_reset(PORT0)
    assert failure.value.errno == errno.EPERM
    to_vfio(sim, PORT1)
    assert sim.vfio_hot_reset(PORT0) == [PORT0, PORT1]
