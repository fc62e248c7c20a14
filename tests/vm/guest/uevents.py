"""Collecting the uevents of the NIC's moves between e1000e and vfio-pci."""

from __future__ import annotations

import select
import time

from vfiod.host.base import EventSource, UEvent
from vfiod.host.real import RealHost

from .. import layout
from . import pci

# The subsystems of a move: the PCI function, its VFIO group and its vfio-dev child.
MOVE_SUBSYSTEMS = ("pci", "vfio", "vfio-dev")
ENTER = [("unbind", "pci"), ("add", "vfio"), ("add", "vfio-dev"), ("bind", "pci")]
LEAVE = [("remove", "vfio-dev"), ("remove", "vfio"), ("unbind", "pci"), ("bind", "pci")]


def collect(source: EventSource, count: int, timeout: float = 10.0) -> list[UEvent]:
    """The next *count* events of the NIC's move (fewer if *timeout* passes first)."""
    seen: list[UEvent] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([source], [], [], 0.2)
        if ready:
            seen += [e for e in source.receive() if e.subsystem in MOVE_SUBSYSTEMS
                     and (e.subsystem == "vfio" or layout.NIC in e.devpath)]
    return seen


def sequence(seen: list[UEvent]) -> list[tuple[str, str]]:
    """(action, subsystem) of each event."""
    return [(e.action, e.subsystem) for e in seen]


def by_seqnum(seen: list[UEvent]) -> list[UEvent]:
    """The events in the kernel's order."""
    return sorted(seen, key=lambda e: int(e.properties["SEQNUM"]))


def enter(host: RealHost, source: EventSource) -> list[UEvent]:
    """Move the NIC to vfio-pci; the events of that."""
    pci.bind_to_vfio(host, layout.NIC)
    return collect(source, len(ENTER))


def leave(host: RealHost, source: EventSource) -> list[UEvent]:
    """Move the NIC (on vfio-pci) back to e1000e; the events of that."""
    pci.return_to_host(host, layout.NIC)
    return collect(source, len(LEAVE))
