"""uevents of a driver move as RealHost.open_events() delivers them with udevd running.

That is every real host: the events come after udevd has handled them, so later than
the kernel sent them and not always in its order; their SEQNUM still gives that order.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vfiod.host.base import EventSource
from vfiod.host.real import RealHost

from . import pci, udev
from .uevents import ENTER, LEAVE, by_seqnum, enter, leave, sequence


@pytest.fixture
def events(host: RealHost) -> Iterator[EventSource]:
    pci.load_vfio_pci(host)
    udev.settle()  # else a previous test's events may still come in
    source = host.open_events()
    assert getattr(source, "source", None) == "udev"
    try:
        yield source
    finally:
        source.close()


def test_entering_vfio_pci_delivers_the_kernels_events_in_seqnum_order(
        host: RealHost, events: EventSource) -> None:
    assert sequence(by_seqnum(enter(host, events))) == ENTER


def test_leaving_vfio_pci_delivers_the_kernels_events_in_seqnum_order(
        host: RealHost, events: EventSource) -> None:
    enter(host, events)
    assert sequence(by_seqnum(leave(host, events))) == LEAVE


def test_a_device_and_its_children_keep_their_order(
        host: RealHost, events: EventSource) -> None:
    # udevd holds an event back while one for the same device, a parent or a child is
    # being handled; only the virtual group device may overtake.
    related = [e for e in enter(host, events) if e.subsystem != "vfio"]
    assert sequence(related) == [s for s in ENTER if s[1] != "vfio"]


def test_bind_event_carries_the_driver(host: RealHost, events: EventSource) -> None:
    bind = next(e for e in enter(host, events) if e.action == "bind")
    assert bind.driver == "vfio-pci"
