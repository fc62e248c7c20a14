"""The reset ladder's rungs on the guest's real devices, with the health check on real
configuration space.

Which device takes which rung (tests/vm/layout.py): the NIC and the xHCI controller are
alone below their root ports (x-speed=5), so the kernel's ``bus`` method is the
secondary bus reset of the parent bridge; the VGA+HDA slot shares its bus, so the VGA's
own ``bus`` is refused and VFIO's hot reset resets both; virtio-gpu has an FLR. Any
function whose slot is all on vfio-pci can be removed and rescanned: the NIC here, and
the two-function slot (marked alters_slot: it comes back in new IOMMU groups). The
kernel's rescan probes what it adds before any write can set the override again, so the
host driver has each function for a moment before vfiod moves it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vfiod.engine import Engine, ResetOutcome
from vfiod.host.base import UEvent
from vfiod.host.real import RealHost

from .. import layout
from . import pci
from .timings import record

NIC, XHCI, VIRTIO_GPU, VGA, HDA = (layout.NIC, layout.XHCI, layout.VIRTIO_GPU, layout.VGA,
                                  layout.HDA)


@pytest.fixture
def engine(host: RealHost, tmp_path: Path) -> Engine:
    """vfiod's engine on the guest's kernel, with a state directory of its own."""
    return Engine(host, tmp_path / "state")


def binds_while(host: RealHost, action: Callable[[], ResetOutcome]
                ) -> tuple[ResetOutcome, list[str]]:
    """Run *action*; its result and every PCI ``bind`` uevent seen meanwhile as
    ``ADDRESS=DRIVER``."""
    source = host.open_events()
    try:
        result = action()
        seen: list[UEvent] = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            seen += source.receive()
            time.sleep(0.1)
    finally:
        source.close()
    return result, [f"{e.pci_address}={e.driver}" for e in seen
                    if e.action == "bind" and e.subsystem == "pci"]


def test_the_nic_alone_below_its_port_is_healthy_after_the_secondary_bus_reset(
        host: RealHost, engine: Engine) -> None:
    engine.bind(NIC)
    outcome = engine.resetter.reset_outcome(NIC, only={"bus"})
    assert (outcome.method, outcome.rungs_tried, outcome.healthy) == ("bus", ("bus",), True)
    assert host.read_text(pci.attr(NIC, "reset_method")) == "pm bus"
    record("reset ladder", "nic secondary bus reset", outcome.seconds)


def test_the_nic_stops_at_its_first_method(host: RealHost, engine: Engine) -> None:
    engine.bind(NIC)
    outcome = engine.reset_outcome(NIC)
    assert (outcome.method, outcome.rungs_tried, outcome.healthy) == ("pm", ("pm",), True)


def test_the_xhci_controller_takes_the_bus_reset_as_its_only_method(
        host: RealHost, engine: Engine) -> None:
    engine.bind(XHCI)
    assert engine.planned_rungs(XHCI) == ["bus", "remove_rescan"]
    outcome = engine.reset_outcome(XHCI)
    assert (outcome.method, outcome.rungs_tried, outcome.healthy) == ("bus", ("bus",), True)


def test_virtio_gpu_is_healthy_after_its_flr(host: RealHost, engine: Engine) -> None:
    engine.bind(VIRTIO_GPU)
    outcome = engine.reset_outcome(VIRTIO_GPU)
    assert (outcome.method, outcome.rungs_tried, outcome.healthy) == ("flr", ("flr",), True)


def test_the_vga_climbs_past_its_refused_bus_reset_to_vfios_hot_reset(
        host: RealHost, engine: Engine) -> None:
    engine.bind(VGA, force=True)
    outcome = engine.reset_outcome(VGA)
    assert (outcome.method, outcome.rungs_tried, outcome.healthy) == (
        "bus", ("bus", "hot_reset"), True)
    record("reset ladder", "vga bus refused then hot reset", outcome.seconds)


def test_remove_and_rescan_of_the_nic_keeps_it_on_vfio_pci(host: RealHost,
                                                          engine: Engine) -> None:
    engine.bind(NIC)
    group_before = pci.group_of(host, NIC)
    outcome, binds = binds_while(
        host, lambda: engine.resetter.reset_outcome(NIC, only={"remove_rescan"}))
    assert (outcome.method, outcome.healthy) == ("remove_rescan", True)
    assert pci.driver_of(host, NIC) == "vfio-pci"
    assert pci.override_of(host, NIC) == "vfio-pci"
    # The kernel's rescan probes the NIC at once (e1000e); vfiod moves it back.
    assert binds == [f"{NIC}=e1000e", f"{NIC}=vfio-pci"]
    print(f"\nNIC group {group_before} -> {pci.group_of(host, NIC)} after remove and rescan")
    record("reset ladder", "nic remove and rescan", outcome.seconds)


@pytest.mark.alters_slot
def test_remove_and_rescan_of_the_vga_slot_brings_both_functions_back_on_vfio_pci(
        host: RealHost, engine: Engine) -> None:
    # Another alters_slot test may have left the two functions in groups of their own.
    engine.bind(VGA, force=True)
    engine.bind(HDA, force=True)
    outcome, binds = binds_while(
        host, lambda: engine.resetter.reset_outcome(VGA, only={"remove_rescan"}))
    assert (outcome.method, outcome.healthy) == ("remove_rescan", True)
    assert [pci.driver_of(host, a) for a in (VGA, HDA)] == ["vfio-pci", "vfio-pci"]
    assert [pci.override_of(host, a) for a in (VGA, HDA)] == ["vfio-pci", "vfio-pci"]
    assert sorted(b for b in binds if b.endswith("=vfio-pci")) == [
        f"{VGA}=vfio-pci", f"{HDA}=vfio-pci"]
    record("reset ladder", "vga slot remove and rescan", outcome.seconds)
