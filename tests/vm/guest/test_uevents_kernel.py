"""The kernel's own uevents of a driver move: RealHost.open_events() without udevd.

udevd is stopped for this module (open_events() then reads the kernel's netlink
group), and started again afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vfiod.host.base import EventSource
from vfiod.host.real import RealHost

from .. import layout
from . import pci
from .uevents import ENTER, LEAVE, enter, leave, sequence


pytestmark = pytest.mark.usefixtures("udevd_stopped")


@pytest.fixture
def events(host: RealHost) -> Iterator[EventSource]:
    pci.load_vfio_pci(host)
    source = host.open_events()
    assert getattr(source, "source", None) == "kernel"
    try:
        yield source
    finally:
        source.close()


def test_entering_vfio_pci_is_unbind_add_group_add_vfio_dev_bind(
        host: RealHost, events: EventSource) -> None:
    assert sequence(enter(host, events)) == ENTER


def test_leaving_vfio_pci_is_remove_vfio_dev_remove_group_unbind_bind(
        host: RealHost, events: EventSource) -> None:
    enter(host, events)
    assert sequence(leave(host, events)) == LEAVE


def test_bind_carries_driver_and_modalias_and_unbind_neither(
        host: RealHost, events: EventSource) -> None:
    seen = enter(host, events)
    unbind = next(e for e in seen if e.action == "unbind")
    bind = next(e for e in seen if e.action == "bind")
    assert bind.driver == "vfio-pci"
    assert bind.properties["MODALIAS"].startswith("pci:v00008086d000010D3")
    assert "DRIVER" not in unbind.properties
    assert "MODALIAS" not in unbind.properties


def test_pci_events_carry_slot_name_id_and_class(host: RealHost, events: EventSource) -> None:
    pci_events = [e for e in enter(host, events) if e.subsystem == "pci"]
    assert len(pci_events) == 2
    for event in pci_events:
        assert event.pci_address == layout.NIC
        assert event.properties["PCI_ID"] == "8086:10D3"
        assert event.properties["PCI_CLASS"] == "20000"


def test_group_event_is_the_virtual_vfio_device_of_the_nics_group(
        host: RealHost, events: EventSource) -> None:
    group = [e for e in enter(host, events) if e.subsystem == "vfio"]
    assert [e.devpath for e in group] == \
        [f"/devices/virtual/vfio/{pci.group_of(host, layout.NIC)}"]


def test_return_to_e1000e_ends_with_bind_driver_e1000e(
        host: RealHost, events: EventSource) -> None:
    enter(host, events)
    assert leave(host, events)[-1].driver == "e1000e"
