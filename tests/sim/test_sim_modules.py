"""Module loading: by name or modalias, binding what matches (kernel-facts.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from simtest import GPU, NIC, dev, driver_of

from vfiod.errors import ModuleLoadError
from vfiod.sim import PROFILES, SimHost


@pytest.fixture
def without_host_drivers() -> Iterator[SimHost]:
    """seed-x99 booted without nvidia and e1000e loaded."""
    profile = dataclasses.replace(
        PROFILES["seed-x99"], name="seed-x99-bare", desktop=None,
        boot_modules=("lpc_ich", "i2c_i801", "ahci", "xhci_pci", "snd_hda_intel"))
    host = SimHost(profile)
    yield host
    host.close()


def test_vfio_pci_loads_by_either_spelling(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    assert sim.module_loaded("vfio_pci") and sim.module_loaded("vfio-pci")


def test_loading_vfio_pci_loads_vfio_and_type1(sim: SimHost) -> None:
    sim.load_module("vfio_pci")
    assert sim.module_loaded("vfio") and sim.module_loaded("vfio_iommu_type1")
    modules = [line.split()[0] for line in (sim.read_text("/proc/modules") or "").splitlines()]
    assert {"vfio_pci", "vfio_pci_core", "vfio", "vfio_iommu_type1"} <= set(modules)


def test_vfio_pci_is_not_loaded_at_boot(sim: SimHost) -> None:
    assert not sim.module_loaded("vfio-pci")
    assert "vfio" not in (sim.read_text("/proc/modules") or "")


def test_builtin_pcieport_counts_as_loaded_without_sys_module(sim: SimHost) -> None:
    assert sim.module_loaded("pcieport")
    assert not sim.exists("/sys/module/pcieport")


def test_unknown_module_is_module_load_error(sim: SimHost) -> None:
    with pytest.raises(ModuleLoadError):
        sim.load_module("vendor-reset")


def test_modalias_nothing_claims_is_module_load_error(sim: SimHost) -> None:
    with pytest.raises(ModuleLoadError):
        sim.load_module("pci:v0000ABCDd00001234sv00000000sd00000000bc08sc80i00")


def test_loading_module_by_name_binds_matching_unbound_devices(
        without_host_drivers: SimHost) -> None:
    assert driver_of(without_host_drivers, GPU) is None
    without_host_drivers.load_module("nvidia")
    assert driver_of(without_host_drivers, GPU) == "nvidia"


def test_loading_module_by_device_modalias_binds_it(without_host_drivers: SimHost) -> None:
    modalias = without_host_drivers.read_text(dev(NIC, "modalias")) or ""
    without_host_drivers.load_module(modalias)
    assert without_host_drivers.module_loaded("e1000e")
    assert driver_of(without_host_drivers, NIC) == "e1000e"


def test_loading_module_respects_driver_override(without_host_drivers: SimHost) -> None:
    without_host_drivers.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    without_host_drivers.load_module("nvidia")
    assert driver_of(without_host_drivers, GPU) is None
    assert driver_of(without_host_drivers, "0000:09:00.0") == "nvidia"


def test_loading_a_loaded_module_changes_nothing(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    sim.load_module("nvidia")  # already loaded: modprobe does nothing
    assert driver_of(sim, GPU) is None
