"""Reset on buses that several functions or IOMMU groups share (seed-x99-shared-bus):
the hot reset is tried whenever the bus qualifies, and says what stands in its way."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import pytest

from vfiod.engine import Engine
from vfiod.engine.reset import hot_reset_obstacle
from vfiod.engine.transactions import lock_order
from vfiod.errors import InUse, ResetFailed
from vfiod.records import State
from vfiod.sim import SimHost

from .placement import driver_of

FIREWIRE, PCI_NIC = "0000:0d:00.0", "0000:0d:01.0"  # behind the PCIe-to-PCI bridge, group 41
PORT0, PORT1 = "0000:0e:00.0", "0000:0e:00.1"  # 82576 ports: one bus, groups 42 and 43
GPU = "0000:06:00.0"
SMBUS = "0000:00:1f.3"  # on the root bus, no reset method


@pytest.fixture
def host(shared_host: SimHost) -> SimHost:
    return shared_host


@pytest.fixture
def engine(shared_engine: Engine) -> Engine:
    return shared_engine


def _hot_resets(host: SimHost) -> list[tuple[str, str, int]]:
    return [entry for entry in host.write_log if entry[1] == "hot reset"]


def test_nic_without_a_reset_file_is_reset_through_its_bus(engine: Engine,
                                                           host: SimHost) -> None:
    engine.bind(PCI_NIC)  # its group brings the FireWire card along
    assert engine.device_status(PCI_NIC).reset_methods == []
    assert engine.reset(PCI_NIC) == "bus"
    assert _hot_resets(host) == [("/dev/vfio/41", "hot reset", 0)]
    assert engine.device_status(PCI_NIC).state is State.VFIO


def test_a_dead_card_comes_back_when_its_neighbour_without_a_reset_file_is_reset(
        engine: Engine, host: SimHost) -> None:
    engine.bind(PCI_NIC)
    host.kernel.kill_device(FIREWIRE)
    engine.rescan()
    assert engine.reset(PCI_NIC) == "bus"
    assert engine.device_status(FIREWIRE).healthy


def test_nic_without_a_reset_file_on_its_host_driver_names_what_shares_its_bus(
        engine: Engine, host: SimHost) -> None:
    with pytest.raises(ResetFailed) as failure:
        engine.reset(PCI_NIC)
    message = str(failure.value)
    assert message.startswith(f"{PCI_NIC}: the kernel offers no reset method of its own")
    assert (f"{FIREWIRE} (VIA Technologies, Inc. VT6306/7/8 [Fire II(M)] IEEE 1394 OHCI "
            "Controller, firewire_ohci)") in message
    assert "r8169" in message and f"vfioctl bind {FIREWIRE}" in message
    assert "GPU" not in message
    assert _hot_resets(host) == []
    assert engine.device_status(PCI_NIC).state is State.ERROR


def test_port_whose_sibling_group_is_on_its_host_driver_names_the_sibling(
        engine: Engine, host: SimHost) -> None:
    engine.bind(PORT0)
    with pytest.raises(ResetFailed) as failure:
        engine.reset(PORT0)
    message = str(failure.value)
    assert "bus: ENOTTY" in message
    assert f"{PORT1} (Intel Corporation 82576 Gigabit Network Connection, igb)" in message
    assert f"put {PORT1} on vfio-pci first (vfioctl bind {PORT1})" in message
    assert _hot_resets(host) == []


def test_port_is_reset_through_the_bus_once_both_groups_are_on_vfio(engine: Engine,
                                                                    host: SimHost) -> None:
    engine.bind(PORT0)
    engine.bind(PORT1)
    assert engine.reset(PORT1) == "bus"
    assert _hot_resets(host) == [("/dev/vfio/43", "hot reset", 0)]


def test_port_reset_is_refused_while_a_guest_holds_the_sibling_group(
        engine: Engine, host: SimHost) -> None:
    engine.bind(PORT0)
    engine.bind(PORT1)
    with host.spawn_holder(["/dev/vfio/42"], comm="qemu-system-x86") as guest:
        with pytest.raises(InUse) as refusal:
            engine.reset(PORT1)
    assert f"pid {guest.pid}" in str(refusal.value)
    assert "IOMMU group 42" in str(refusal.value)
    assert _hot_resets(host) == []
    assert driver_of(host, PORT0) == driver_of(host, PORT1) == "vfio-pci"


def test_a_function_on_the_root_bus_without_a_method_says_why(engine: Engine) -> None:
    with pytest.raises(ResetFailed, match="root bus 0000:00, which has no bridge above it"):
        engine.reset(SMBUS)


def test_a_reset_holds_every_group_on_its_bus(engine: Engine) -> None:
    assert engine.lock_keys("reset", PORT0) == ["group-42", "group-43"]
    assert engine.lock_keys("reset", PCI_NIC) == ["group-41"]
    assert engine.lock_keys("reset", GPU) == ["group-31"]


def test_bind_and_unbind_hold_only_their_group(engine: Engine) -> None:
    assert engine.lock_keys("bind", PORT0) == ["group-42"]
    assert engine.lock_keys("unbind", PORT1) == ["group-43"]


def test_a_reset_on_the_root_bus_holds_only_its_group(engine: Engine) -> None:
    assert engine.lock_keys("reset", SMBUS) == ["group-12"]


def test_keys_are_taken_by_group_number_then_devices_without_a_group() -> None:
    keys = ["0000:00:1f.3", "group-10", "group-9", "group-100"]
    assert sorted(keys, key=lock_order) == ["group-9", "group-10", "group-100", "0000:00:1f.3"]


def test_a_bus_that_also_carries_a_bridge_is_not_hot_reset(engine: Engine) -> None:
    devices = engine.devices()
    port = dataclasses.replace(devices[PORT0], driver="vfio-pci")
    bridge = dataclasses.replace(devices["0000:0c:00.0"], address="0000:0e:01.0")
    obstacle = hot_reset_obstacle(port, {PORT0: port, bridge.address: bridge})
    assert obstacle is not None
    assert "would also reset everything below 0000:0e:01.0" in obstacle


def test_a_bus_entirely_on_vfio_pci_qualifies(engine: Engine) -> None:
    devices = engine.devices()
    ports = {a: dataclasses.replace(devices[a], driver="vfio-pci") for a in (PORT0, PORT1)}
    assert hot_reset_obstacle(ports[PORT0], ports) is None


def test_port_reset_is_refused_at_once_while_a_guest_holds_only_a_device_fd_of_the_sibling(
        engine: Engine, host: SimHost) -> None:
    engine.bind(PORT0)
    engine.bind(PORT1)
    with host.spawn_holder([], device_fds=[PORT0]) as guest:
        began = time.monotonic()
        with pytest.raises(InUse) as refusal:
            engine.reset(PORT1)
        took = time.monotonic() - began
    assert f"pid {guest.pid}" in str(refusal.value)
    assert "IOMMU group 42" in str(refusal.value)
    assert took < 1.0
    assert _hot_resets(host) == []


def test_the_hot_reset_is_handed_the_fence_of_every_group_on_its_bus(
        engine: Engine, host: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.bind(PORT0)
    engine.bind(PORT1)
    handed: list[set[int]] = []
    hot_reset = host.vfio_hot_reset

    def spy(address: str, group_fds: Mapping[int, int] | None = None) -> list[str]:
        handed.append(set(group_fds or {}))
        return hot_reset(address, group_fds)

    monkeypatch.setattr(host, "vfio_hot_reset", spy)
    assert engine.reset(PORT1) == "bus"
    assert handed == [{42, 43}]


def test_both_groups_are_free_again_after_the_hot_reset(engine: Engine,
                                                        host: SimHost) -> None:
    engine.bind(PORT0)
    engine.bind(PORT1)
    assert engine.reset(PORT1) == "bus"
    for node in ("/dev/vfio/42", "/dev/vfio/43"):
        fd = host.open_group(int(node.rpartition("/")[2]))
        host.close_group(fd)
