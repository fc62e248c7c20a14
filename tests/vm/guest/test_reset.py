"""Function resets through ``reset_method`` and ``reset`` on the emulated devices."""

from __future__ import annotations

import errno
import time

import pytest

from vfiod.errors import HostWriteError
from vfiod.host.real import RealHost

from .. import layout
from . import pci


def methods(host: RealHost, address: str) -> str | None:
    return host.read_text(pci.attr(address, "reset_method"))


def reset_with(host: RealHost, address: str, method: str) -> float:
    """Select one method and reset; the seconds the reset took."""
    host.write_attr(pci.attr(address, "reset_method"), method)
    started = time.monotonic()
    host.write_attr(pci.attr(address, "reset"), "1")
    return time.monotonic() - started


def healthy(host: RealHost, address: str) -> bool:
    """Config space answers (a dead function reads vendor 0xffff)."""
    return host.read_int(pci.attr(address, "vendor"), 16) not in (None, 0xFFFF)


def test_virtio_gpu_lists_flr_pm_bus(host: RealHost) -> None:
    assert methods(host, layout.VIRTIO_GPU) == "flr pm bus"


def test_virtio_gpu_resets_by_flr(host: RealHost) -> None:
    reset_with(host, layout.VIRTIO_GPU, "flr")
    assert healthy(host, layout.VIRTIO_GPU)
    assert pci.driver_of(host, layout.VIRTIO_GPU) == "virtio-pci"


def test_e1000e_lists_pm_bus(host: RealHost) -> None:
    assert methods(host, layout.NIC) == "pm bus"


@pytest.mark.parametrize("method", ["pm", "bus"])
def test_e1000e_resets_by(host: RealHost, method: str) -> None:
    reset_with(host, layout.NIC, method)
    assert healthy(host, layout.NIC)


def test_selecting_a_method_narrows_the_list_and_default_restores_it(host: RealHost) -> None:
    host.write_attr(pci.attr(layout.NIC, "reset_method"), "bus")
    assert methods(host, layout.NIC) == "bus"
    host.write_attr(pci.attr(layout.NIC, "reset_method"), "default")
    assert methods(host, layout.NIC) == "pm bus"


def test_vga_function_of_two_function_slot_lists_bus_but_bus_reset_is_enotty(
        host: RealHost) -> None:
    assert methods(host, layout.VGA) == "bus"
    with pytest.raises(HostWriteError) as failure:
        host.write_attr(pci.attr(layout.VGA, "reset"), "1")
    assert failure.value.errno == errno.ENOTTY


def test_hda_function_has_no_reset_and_no_reset_method(host: RealHost) -> None:
    assert not host.exists(pci.attr(layout.HDA, "reset"))
    assert not host.exists(pci.attr(layout.HDA, "reset_method"))


def test_bus_reset_of_a_pcie_endpoint_below_a_slow_port_is_enotty_after_the_link_wait(
        host: RealHost) -> None:
    assert not layout.port_of("virtio_gpu").fast_link
    started = time.monotonic()
    with pytest.raises(HostWriteError) as failure:
        reset_with(host, layout.VIRTIO_GPU, "bus")
    assert failure.value.errno == errno.ENOTTY
    # The kernel waits for Data Link Layer Link Active (1000 ms) before giving up.
    assert time.monotonic() - started > 1.0
    assert healthy(host, layout.VIRTIO_GPU)


def test_xhci_lists_only_bus(host: RealHost) -> None:
    assert methods(host, layout.XHCI) == "bus"


def test_xhci_resets_by_bus(host: RealHost) -> None:
    reset_with(host, layout.XHCI, "bus")
    assert healthy(host, layout.XHCI)
    assert pci.driver_of(host, layout.XHCI) == "xhci_hcd"
