"""A DRM card's uevent file, the simulation's netlink for other processes, and
simulated compositors that honour (or ignore) a ``remove`` of their card."""

from __future__ import annotations

import errno
import uuid
from collections.abc import Iterator

import pytest
from simtest import DESKTOP_GPU, GPU, driver_of, wait_for, write_errno

from vfiod.sim import SimHost
from vfiod.sim.uevent_stream import UeventListener

CARD0_UEVENT = "/sys/class/drm/card0/uevent"  # the desktop's GPU, 05:00.0
CARD0 = "/dev/dri/card0"


@pytest.fixture
def bare() -> Iterator[SimHost]:
    """seed-x99 without its Xorg: the test starts the desktop it needs."""
    host = SimHost(profile="seed-x99", desktop=False)
    try:
        yield host
    finally:
        host.close()


def test_remove_written_to_a_card_uevent_sends_a_synthetic_drm_remove(sim: SimHost) -> None:
    events = sim.open_events()
    sim.write_attr(CARD0_UEVENT, "remove\n")
    (event,) = events.receive()
    assert (event.action, event.subsystem) == ("remove", "drm")
    assert event.devpath.endswith(f"/{DESKTOP_GPU}/drm/card0")
    assert event.properties["DEVNAME"] == CARD0
    assert event.properties["SYNTH_UUID"] == "0"


def test_a_synthetic_remove_leaves_the_card_and_its_driver_in_place(sim: SimHost) -> None:
    sim.write_attr(CARD0_UEVENT, "remove")
    assert sim.exists(CARD0) and sim.exists(CARD0_UEVENT)
    assert driver_of(sim, DESKTOP_GPU) == "nvidia"


def test_a_uuid_and_arguments_become_synth_uuid_and_synth_arg_variables(sim: SimHost) -> None:
    events = sim.open_events()
    tag = str(uuid.uuid4())
    sim.write_attr(CARD0_UEVENT, f"remove {tag} BY=vfiod")
    (event,) = events.receive()
    assert event.properties["SYNTH_UUID"] == tag
    assert event.properties["SYNTH_ARG_BY"] == "vfiod"


def test_a_card_uevent_write_of_an_unknown_action_is_einval(sim: SimHost) -> None:
    assert write_errno(sim, CARD0_UEVENT, "vanish") == errno.EINVAL


def test_arguments_without_a_uuid_are_einval(sim: SimHost) -> None:
    assert write_errno(sim, CARD0_UEVENT, "remove BY=vfiod") == errno.EINVAL


def test_another_process_listening_by_the_root_receives_the_event(sim: SimHost) -> None:
    with UeventListener(sim.root) as listener:
        sim.write_attr(CARD0_UEVENT, "remove")
        received = listener.receive(5.0)
    assert [(e["ACTION"], e["SUBSYSTEM"], e["DEVNAME"]) for e in received] == [
        ("remove", "drm", CARD0)]


def test_a_listener_that_went_away_is_forgotten(sim: SimHost) -> None:
    listener = UeventListener(sim.root)
    listener.close()
    sim.write_attr(CARD0_UEVENT, "remove")
    assert not (sim.root / ".sim-uevents").exists() or \
        not any((sim.root / ".sim-uevents").iterdir())


def test_a_compositor_that_honours_remove_closes_its_card(bare: SimHost) -> None:
    kwin = bare.spawn_holder([CARD0, "/dev/nvidia0"], comm="kwin_wayland",
                            release_on_remove=True)
    assert bare.holders([CARD0])[CARD0][0].pid == kwin.pid
    bare.write_attr(CARD0_UEVENT, "remove")
    assert wait_for(lambda: not bare.holders([CARD0, "/dev/nvidia0"]))
    assert kwin.running  # it let go of the card; it did not die


def test_a_compositor_that_honours_remove_ignores_another_card(bare: SimHost) -> None:
    kwin = bare.spawn_holder([CARD0], comm="kwin_wayland", release_on_remove=True)
    bare.write_attr("/sys/class/drm/card1/uevent", "remove")  # 06:00.0's card
    bare.write_attr(f"/sys/bus/pci/devices/{GPU}/uevent", "change")
    assert not wait_for(lambda: not bare.holders([CARD0]), timeout=0.5)
    assert kwin.running


def test_a_holder_that_ignores_remove_keeps_its_card(bare: SimHost) -> None:
    xorg = bare.spawn_holder([CARD0], comm="Xorg")
    bare.write_attr(CARD0_UEVENT, "remove")
    assert not wait_for(lambda: not bare.holders([CARD0]), timeout=0.5)
    assert xorg.running


def test_leaving_the_host_driver_removes_the_drm_card_with_a_drm_remove_uevent(
        bare: SimHost) -> None:
    # What a follower of udev's drm subsystem (switcheroo-control) re-reads its GPUs on.
    bare.load_module("vfio-pci")
    events = bare.open_events()
    bare.write_attr(f"/sys/bus/pci/devices/{GPU}/driver_override", "vfio-pci")
    bare.write_attr(f"/sys/bus/pci/devices/{GPU}/driver/unbind", GPU)
    drm = [(e.action, e.properties.get("DEVNAME")) for e in events.receive()
           if e.subsystem == "drm"]
    assert ("remove", "/dev/dri/card1") in drm
    assert not bare.exists("/sys/class/drm/card1")


def test_returning_to_the_host_driver_adds_the_drm_card_again(bare: SimHost) -> None:
    bare.write_attr(f"/sys/bus/pci/devices/{GPU}/driver/unbind", GPU)
    events = bare.open_events()
    bare.write_attr("/sys/bus/pci/drivers_probe", GPU)
    drm = [(e.action, e.properties.get("DEVNAME")) for e in events.receive()
           if e.subsystem == "drm"]
    assert ("add", "/dev/dri/card1") in drm
    assert bare.exists("/sys/class/drm/card1/uevent")
