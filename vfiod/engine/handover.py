"""Handing a GPU the host's desktop uses over to vfio-pci, the polite way.

Bind with ``force`` used to take such a GPU from under the compositor. Now vfiod first
finds who holds its DRM nodes (the soft guard's finding), asks the kernel to tell the
desktop that the card is going (``remove`` written to the card's ``uevent`` file: a
synthetic remove uevent, the card itself stays; KWin lets go of a secondary GPU then,
and quits when it was its primary one), and waits, woken by the closes and the
holders' exits, until nobody holds the card or the timeout runs out. The bind then
goes ahead, or is refused naming who still holds it, and then an ``add`` uevent of the
card says it is there after all (udevd dropped its entry at the remove).

The daemon says so on the bus first (signal ``Releasing``, property ``Releasing``):
the desktop's own tools (vfiod-applet) tell the user which programs hold the card.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from vfiod.engine.inventory import Inventory
from vfiod.engine.writes import Writer
from vfiod.errors import HostWriteError, InUse
from vfiod.guards import check_usages, node_paths
from vfiod.host import paths
from vfiod.host.base import Process
from vfiod.model import PciDevice
from vfiod.printable import printable

log = logging.getLogger("vfiod.engine")

@dataclass(frozen=True)
class Release:
    """A GPU about to be bound whose DRM nodes processes of the host hold."""

    address: str
    cards: tuple[str, ...]  # its DRM cards (``card0``): whose uevent file is written
    nodes: tuple[str, ...]  # every DRM node of it (card, render node, /dev/nvidiaN)
    holders: tuple[Process, ...]

    @property
    def holder_names(self) -> list[str]:
        """``Xorg (pid 1234)`` for each holder, printable."""
        return [printable(str(p)) for p in self.holders]


def bind_targets(dev: PciDevice, members: list[PciDevice], group: bool) -> list[PciDevice]:
    """The functions a bind would move: the group's endpoints not on vfio-pci, or one."""
    if group:
        return [m for m in members if m.is_endpoint and not m.on_vfio]
    return [] if dev.on_vfio else [dev]


def releases_for_bind(inventory: Inventory, address: str, group: bool) -> list[Release]:
    """The GPUs a forced bind of *address* would take from the host's desktop.

    A hard guard (a mounted disk) refuses here already (InUse): no desktop is asked
    to let go of a card for a bind that cannot happen.
    """
    dev, members = inventory.fresh(address)
    targets = bind_targets(dev, members, group)
    if not targets:
        return []
    holders = inventory.scan_holders(inventory.nodes_of(members))
    check_usages(inventory.host, targets, force=True, action="bind it to vfio-pci",
                 holders=holders)
    found = []
    for target in targets:
        nodes = node_paths(inventory.host, target)["drm"]
        procs: dict[int, Process] = {}
        for node in nodes:
            for proc in holders.get(node, []):
                procs.setdefault(proc.pid, proc)
        cards = tuple(c for c in target.children.drm if c.startswith("card"))
        if procs and cards:
            found.append(Release(target.address, cards, tuple(nodes),
                                 tuple(procs[p] for p in sorted(procs))))
    return found


def ask_to_release(writer: Writer, release: Release, action: str = "remove") -> None:
    """Tell the desktop the card is going: ``remove`` to each card's uevent file.

    *action* ``add`` takes it back after a refusal: udevd dropped the card's database
    entry and links at the synthetic remove, and a compositor that let go of it may
    take it again. A card whose file refuses the write (it went away meanwhile) is
    logged; the wait that follows says whether the card was let go.
    """
    for card in release.cards:
        try:
            writer.write(paths.drm_card_uevent(card), action, release.address)
        except HostWriteError as err:
            log.warning("%s: could not announce %s of %s: %s", release.address,
                        "the removal" if action == "remove" else f"'{action}'", card, err)


def wait_released(inventory: Inventory, release: Release, timeout: float) -> list[Process]:
    """Wait up to *timeout* seconds for every holder to close the GPU's DRM nodes;
    the processes that still hold one then (empty: released)."""
    left = inventory.host.wait_closed(release.nodes, timeout)
    procs: dict[int, Process] = {}
    for holders in left.values():
        for proc in holders:
            procs.setdefault(proc.pid, proc)
    return [procs[p] for p in sorted(procs)]


def refusal(release: Release, still: list[Process], timeout: float) -> InUse:
    """The error of a bind whose card was not let go within the timeout."""
    who = ", ".join(printable(str(p)) for p in still)
    cards = ", ".join(paths.drm_node(c) for c in release.cards)
    return InUse(f"{release.address}: refusing to bind it to vfio-pci: the desktop did "
                 f"not release {cards} within {timeout:g} s: still held by {who}; close "
                 "those programs (or log out of the session on that GPU) and try again")


def hand_over(inventory: Inventory, writer: Writer, releases: list[Release],
              timeout: float) -> None:
    """Ask the desktop to let go of each GPU and wait for it (all GPUs within one
    *timeout*); InUse naming who still holds the first one that was not let go."""
    for release in releases:
        log.info("%s: asking %s to release %s (up to %g s)", release.address,
                 ", ".join(release.holder_names), ", ".join(release.cards), timeout)
        ask_to_release(writer, release)
    deadline = time.monotonic() + timeout
    for release in releases:
        still = wait_released(inventory, release, max(deadline - time.monotonic(), 0.0))
        if still:
            # The cards stay on the host: say they are there after all (udev and the
            # desktop took the remove at its word).
            for taken_back in releases:
                ask_to_release(writer, taken_back, "add")
            raise refusal(release, still, timeout)
        log.info("%s: the desktop released %s", release.address, ", ".join(release.cards))
