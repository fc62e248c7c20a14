"""Moving devices between their host driver and vfio-pci, and /dev/vfio/N with them."""

from __future__ import annotations

import os
import stat

import pytest

from vfiod.host.real import RealHost

from .. import layout
from . import pci


@pytest.fixture
def vfio_loaded(host: RealHost) -> None:
    pci.load_vfio_pci(host)


@pytest.fixture
def vfio_unloaded(host: RealHost) -> None:
    pci.unload_vfio_pci()
    assert not host.module_loaded("vfio-pci")


def group_node(host: RealHost, address: str) -> str:
    return f"/dev/vfio/{pci.group_of(host, address)}"


def test_override_unbind_and_drivers_probe_move_the_nic_to_vfio_pci(
        host: RealHost, vfio_loaded: None) -> None:
    pci.bind_to_vfio(host, layout.NIC)
    assert pci.driver_of(host, layout.NIC) == "vfio-pci"
    assert pci.override_of(host, layout.NIC) == "vfio-pci"


def test_empty_override_unbind_and_drivers_probe_return_the_nic_to_e1000e(
        host: RealHost, vfio_loaded: None) -> None:
    pci.bind_to_vfio(host, layout.NIC)
    pci.return_to_host(host, layout.NIC)
    assert pci.driver_of(host, layout.NIC) == "e1000e"
    assert pci.override_of(host, layout.NIC) is None


def test_drivers_probe_succeeds_when_vfio_pci_is_not_loaded_and_nothing_binds(
        host: RealHost, vfio_unloaded: None) -> None:
    host.write_attr(pci.attr(layout.NIC, "driver_override"), "vfio-pci")
    pci.unbind(host, layout.NIC)
    host.write_attr(pci.DRIVERS_PROBE, layout.NIC)  # no error ...
    assert pci.driver_of(host, layout.NIC) is None  # ... and no driver


def test_loading_vfio_pci_binds_a_device_waiting_with_its_override(
        host: RealHost, vfio_unloaded: None) -> None:
    host.write_attr(pci.attr(layout.NIC, "driver_override"), "vfio-pci")
    pci.unbind(host, layout.NIC)
    host.load_module("vfio-pci")
    assert pci.wait_until(lambda: pci.driver_of(host, layout.NIC) == "vfio-pci")


def test_group_node_appears_on_bind_with_mode_0600_and_disappears_on_unbind(
        host: RealHost, vfio_loaded: None) -> None:
    node = group_node(host, layout.NIC)
    assert not host.exists(node)
    pci.bind_to_vfio(host, layout.NIC)
    assert pci.wait_until(lambda: host.exists(node))
    mode = os.stat(host.real_path(node)).st_mode
    assert stat.S_ISCHR(mode) and stat.S_IMODE(mode) == 0o600
    pci.return_to_host(host, layout.NIC)
    assert pci.wait_until(lambda: not host.exists(node))


def test_container_node_exists_once_vfio_is_loaded(host: RealHost, vfio_loaded: None) -> None:
    assert stat.S_ISCHR(os.stat(host.real_path("/dev/vfio/vfio")).st_mode)


def test_group_node_stays_until_the_last_function_of_the_group_leaves(
        host: RealHost, vfio_loaded: None) -> None:
    node = group_node(host, layout.VGA)
    pci.bind_to_vfio(host, layout.VGA)
    pci.bind_to_vfio(host, layout.HDA)
    assert pci.wait_until(lambda: host.exists(node))
    pci.return_to_host(host, layout.VGA)
    assert pci.driver_of(host, layout.VGA) == "bochs-drm"
    assert host.exists(node), "the group node went away while the HDA function is on vfio-pci"
    pci.return_to_host(host, layout.HDA)
    assert pci.wait_until(lambda: not host.exists(node))


def test_remove_and_rescan_forget_driver_override(host: RealHost, vfio_loaded: None) -> None:
    pci.bind_to_vfio(host, layout.NIC)
    host.write_attr(pci.attr(layout.NIC, "remove"), "1")
    assert pci.wait_until(lambda: not host.exists(pci.attr(layout.NIC, "vendor")))
    host.write_attr("/sys/bus/pci/rescan", "1")
    assert pci.wait_until(lambda: pci.driver_of(host, layout.NIC) == "e1000e", timeout=10)
    assert pci.override_of(host, layout.NIC) is None
