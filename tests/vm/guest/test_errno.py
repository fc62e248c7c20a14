"""The errno of bad writes to PCI control files (kernel-facts.md), via RealHost.write_attr."""

from __future__ import annotations

import errno

import pytest

from vfiod.errors import HostWriteError
from vfiod.host.real import RealHost

from .. import layout
from . import pci

ABSENT = "0000:7f:1f.7"  # a well-formed address no device has


@pytest.fixture(autouse=True)
def vfio_loaded(host: RealHost) -> None:
    pci.load_vfio_pci(host)


def errno_of(host: RealHost, path: str, value: str) -> int:
    """The errno a write fails with (the test fails if it succeeds)."""
    with pytest.raises(HostWriteError) as failure:
        host.write_attr(path, value)
    return failure.value.errno


def test_drivers_probe_of_an_absent_address_is_enodev(host: RealHost) -> None:
    assert errno_of(host, pci.DRIVERS_PROBE, ABSENT) == errno.ENODEV


def test_drivers_probe_of_garbage_is_enodev(host: RealHost) -> None:
    assert errno_of(host, pci.DRIVERS_PROBE, "not-an-address") == errno.ENODEV


def test_drivers_probe_of_a_bound_device_succeeds_and_changes_nothing(host: RealHost) -> None:
    host.write_attr(pci.DRIVERS_PROBE, layout.NIC)
    assert pci.driver_of(host, layout.NIC) == "e1000e"


def test_unbind_from_a_driver_the_device_is_not_on_is_enodev(host: RealHost) -> None:
    assert errno_of(host, f"{pci.DRIVERS}/ahci/unbind", layout.NIC) == errno.ENODEV


def test_unbind_of_an_absent_device_is_enodev(host: RealHost) -> None:
    assert errno_of(host, f"{pci.DRIVERS}/e1000e/unbind", ABSENT) == errno.ENODEV


def test_driver_unbind_of_a_device_without_driver_is_enoent(host: RealHost) -> None:
    pci.unbind(host, layout.NIC)
    assert errno_of(host, pci.attr(layout.NIC, "driver/unbind"), layout.NIC) == errno.ENOENT


def test_vfio_bind_of_a_device_already_on_vfio_pci_is_ebusy(host: RealHost) -> None:
    pci.bind_to_vfio(host, layout.NIC)
    assert errno_of(host, f"{pci.DRIVERS}/vfio-pci/bind", layout.NIC) == errno.EBUSY


def test_bind_to_a_driver_other_than_the_override_is_enodev(host: RealHost) -> None:
    host.write_attr(pci.attr(layout.NIC, "driver_override"), "vfio-pci")
    pci.unbind(host, layout.NIC)
    assert errno_of(host, f"{pci.DRIVERS}/e1000e/bind", layout.NIC) == errno.ENODEV


def test_vfio_bind_without_override_is_enodev(host: RealHost) -> None:
    pci.unbind(host, layout.NIC)
    assert errno_of(host, f"{pci.DRIVERS}/vfio-pci/bind", layout.NIC) == errno.ENODEV


def test_reset_with_a_value_other_than_1_is_einval(host: RealHost) -> None:
    assert errno_of(host, pci.attr(layout.NIC, "reset"), "2") == errno.EINVAL


def test_unknown_reset_method_is_einval(host: RealHost) -> None:
    assert errno_of(host, pci.attr(layout.NIC, "reset_method"), "warp") == errno.EINVAL


def test_5000_byte_driver_override_is_einval(host: RealHost) -> None:
    assert errno_of(host, pci.attr(layout.NIC, "driver_override"), "x" * 5000) == errno.EINVAL


def test_malformed_new_id_is_einval(host: RealHost) -> None:
    assert errno_of(host, f"{pci.DRIVERS}/vfio-pci/new_id", "zzzz") == errno.EINVAL


def test_remove_id_never_added_is_enodev(host: RealHost) -> None:
    assert errno_of(host, f"{pci.DRIVERS}/vfio-pci/remove_id", "1234 5678") == errno.ENODEV
