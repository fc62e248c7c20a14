"""uevents: the kernel's order and properties (kernel-facts.md, uevents)."""

from __future__ import annotations

import errno
import select

import pytest
from simtest import AUDIO, GPU, dev, summary, to_host, to_vfio, write_errno

from vfiod.sim import SimHost
from vfiod.sim.events import EventHub


@pytest.fixture
def vfio_sim(sim: SimHost) -> SimHost:
    sim.load_module("vfio-pci")
    return sim


def test_entering_vfio_pci_sends_unbind_add_group_add_vfio_dev_bind(vfio_sim: SimHost) -> None:
    events = vfio_sim.open_events()
    to_vfio(vfio_sim, GPU)
    pci_and_vfio = [e for e in summary(events.receive()) if e[1] in ("pci", "vfio", "vfio-dev")]
    assert pci_and_vfio == [("unbind", "pci", None), ("add", "vfio", None),
                            ("add", "vfio-dev", None), ("bind", "pci", "vfio-pci")]


def test_second_group_member_entering_vfio_pci_adds_no_group(vfio_sim: SimHost) -> None:
    to_vfio(vfio_sim, GPU)
    events = vfio_sim.open_events()
    to_vfio(vfio_sim, AUDIO)
    assert ("add", "vfio", None) not in summary(events.receive())


def test_leaving_vfio_pci_sends_remove_vfio_dev_remove_group_unbind_bind(
        vfio_sim: SimHost) -> None:
    to_vfio(vfio_sim, GPU)
    events = vfio_sim.open_events()
    to_host(vfio_sim, GPU)
    pci_and_vfio = [e for e in summary(events.receive()) if e[1] in ("pci", "vfio", "vfio-dev")]
    assert pci_and_vfio == [("remove", "vfio-dev", None), ("remove", "vfio", None),
                            ("unbind", "pci", None), ("bind", "pci", "nvidia")]


def test_group_is_removed_only_with_its_last_vfio_member(vfio_sim: SimHost) -> None:
    to_vfio(vfio_sim, GPU)
    to_vfio(vfio_sim, AUDIO)
    events = vfio_sim.open_events()
    to_host(vfio_sim, GPU)
    assert ("remove", "vfio", None) not in summary(events.receive())


def test_group_event_names_the_group_node(vfio_sim: SimHost) -> None:
    events = vfio_sim.open_events()
    to_vfio(vfio_sim, GPU)
    group = next(e for e in events.receive() if e.subsystem == "vfio")
    assert group.devpath == "/devices/virtual/vfio/31"
    assert group.properties["DEVNAME"] == "/dev/vfio/31"  # as libudev reports it


def test_pci_events_carry_slot_id_and_class(vfio_sim: SimHost) -> None:
    events = vfio_sim.open_events()
    to_vfio(vfio_sim, GPU)
    for e in events.receive():
        if e.subsystem == "pci":
            assert e.pci_address == GPU
            assert e.properties["PCI_ID"] == "10DE:1B06"
            assert e.properties["PCI_CLASS"] == "30000"
            assert e.devpath.endswith(f"/0000:04:10.0/{GPU}")


def test_bind_carries_modalias_and_unbind_does_not(vfio_sim: SimHost) -> None:
    # lib/kobject_uevent.c zap_modalias_env: no module load for a device just unbound.
    events = vfio_sim.open_events()
    to_vfio(vfio_sim, GPU)
    by_action = {e.action: e for e in events.receive() if e.subsystem == "pci"}
    assert by_action["bind"].properties["MODALIAS"].startswith("pci:v000010DEd00001B06")
    assert "MODALIAS" not in by_action["unbind"].properties


def test_bind_carries_driver_and_unbind_does_not(vfio_sim: SimHost) -> None:
    events = vfio_sim.open_events()
    to_vfio(vfio_sim, GPU)
    by_action = {e.action: e for e in events.receive() if e.subsystem == "pci"}
    assert by_action["bind"].properties["DRIVER"] == "vfio-pci"
    assert "DRIVER" not in by_action["unbind"].properties


def test_host_driver_children_go_before_unbind_and_come_before_bind(sim: SimHost) -> None:
    events = sim.open_events()
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    sim.write_attr("/sys/bus/pci/drivers_probe", GPU)
    assert summary(events.receive()) == [
        ("remove", "drm", None), ("remove", "drm", None), ("unbind", "pci", None),
        ("add", "drm", None), ("add", "drm", None), ("bind", "pci", "nvidia")]


def test_remove_and_rescan_send_remove_and_add(sim: SimHost) -> None:
    events = sim.open_events()
    sim.write_attr(dev(AUDIO, "remove"), "1")
    sim.write_attr("/sys/bus/pci/rescan", "1")
    pci = [(e.action, e.driver) for e in events.receive() if e.subsystem == "pci"]
    assert pci == [("unbind", None), ("remove", None), ("add", None),
                   ("bind", "snd_hda_intel")]


def test_events_are_numbered_in_order(vfio_sim: SimHost) -> None:
    events = vfio_sim.open_events()
    to_vfio(vfio_sim, GPU)
    seqnums = [int(e.properties["SEQNUM"]) for e in events.receive()]
    assert seqnums == sorted(seqnums) and len(set(seqnums)) == len(seqnums)


def test_every_open_source_gets_every_event(vfio_sim: SimHost) -> None:
    first, second = vfio_sim.open_events(), vfio_sim.open_events()
    to_vfio(vfio_sim, GPU)
    assert summary(first.receive()) == summary(second.receive()) != []


def test_source_fileno_is_readable_while_events_wait(vfio_sim: SimHost) -> None:
    events = vfio_sim.open_events()
    assert select.select([events], [], [], 0)[0] == []
    to_vfio(vfio_sim, GPU)
    assert select.select([events], [], [], 1.0)[0] == [events]
    events.receive()
    assert select.select([events], [], [], 0)[0] == []


def test_receive_with_nothing_waiting_returns_empty_list(sim: SimHost) -> None:
    assert sim.open_events().receive() == []


def test_closed_source_receives_nothing_more(vfio_sim: SimHost) -> None:
    events = vfio_sim.open_events()
    events.close()
    to_vfio(vfio_sim, GPU)
    assert events.receive() == []


def test_overflow_drops_events_and_next_receive_raises_enobufs_once() -> None:
    hub = EventHub()
    source = hub.open()
    source._limit = 3  # a small bound keeps the test fast; the default is 10,000
    for i in range(5):
        hub.emit("change", f"/devices/x{i}", "pci", {})
    with pytest.raises(OSError) as lost:
        source.receive()
    assert lost.value.errno == errno.ENOBUFS
    assert [e.devpath for e in source.receive()] == ["/devices/x0", "/devices/x1",
                                                     "/devices/x2"]
    assert source.receive() == []
    source.close()


def test_uevent_write_synthesizes_an_event(sim: SimHost) -> None:
    events = sim.open_events()
    sim.write_attr(dev(GPU, "uevent"), "change")
    (event,) = events.receive()
    assert (event.action, event.pci_address, event.driver) == ("change", GPU, "nvidia")


def test_uevent_write_of_unknown_action_is_einval(sim: SimHost) -> None:
    assert write_errno(sim, dev(GPU, "uevent"), "explode") == errno.EINVAL


def test_module_load_sends_module_add_events(sim: SimHost) -> None:
    events = sim.open_events()
    sim.load_module("vfio-pci")
    modules = [e.devpath for e in events.receive() if e.subsystem == "module"]
    assert modules[-1] == "/module/vfio_pci" and "/module/vfio" in modules


def test_a_listener_with_a_small_queue_loses_events_with_enobufs() -> None:
    import errno as errno_mod

    from vfiod.sim.events import EventHub

    hub = EventHub()
    small = hub.open(limit=2)
    try:
        for n in range(3):
            hub.emit("change", f"/devices/x{n}", "pci", {})
        with pytest.raises(OSError) as lost:
            small.receive()
        assert lost.value.errno == errno_mod.ENOBUFS
        assert [e.devpath for e in small.receive()] == ["/devices/x0", "/devices/x1"]
    finally:
        hub.close()
