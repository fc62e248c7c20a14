"""Handing the desktop's GPU over: ask the desktop to let go (a remove uevent of its
card), wait for it, then bind, or refuse naming who still holds the card."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.config import parse_config
from vfiod.engine import Engine
from vfiod.device_records import ResetResult
from vfiod.errors import InUse, Quarantined
from vfiod.sim import SimHost

from .placement import driver_of

DESKTOP_GPU = "0000:05:00.0"  # card0, held by the session
IDLE_GPU = "0000:06:00.0"
CARD0 = "/dev/dri/card0"
SESSION_NODES = ["/dev/dri/card0", "/dev/nvidia0", "/dev/nvidiactl"]


@pytest.fixture
def bare() -> Iterator[SimHost]:
    """seed-x99 without its Xorg: each test starts the desktop it needs."""
    sim = SimHost(profile="seed-x99", desktop=False)
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture
def bare_engine(bare: SimHost, tmp_path: Path) -> Engine:
    return Engine(bare, tmp_path / "state", write_timeout=5.0)


def test_the_desktop_gpu_is_found_with_its_card_and_who_holds_it(engine: Engine,
                                                                  host: SimHost) -> None:
    assert host.desktop is not None
    (release,) = engine.releases(DESKTOP_GPU)
    assert release.address == DESKTOP_GPU and release.cards == ("card0",)
    assert release.holder_names == [f"Xorg (pid {host.desktop.pid})"]


def test_a_gpu_nobody_holds_needs_no_handover(engine: Engine) -> None:
    assert engine.releases(IDLE_GPU) == []


def test_a_hard_guard_refuses_before_any_desktop_is_asked(engine: Engine,
                                                          host: SimHost) -> None:
    with pytest.raises(InUse, match="force does not override"):
        engine.releases("0000:00:1f.2")
    assert not any(path.endswith("/uevent") for path, _, _ in host.write_log)


def test_a_compositor_that_honours_remove_lets_the_forced_bind_go_ahead(
        bare_engine: Engine, bare: SimHost) -> None:
    kwin = bare.spawn_holder(SESSION_NODES, comm="kwin_wayland", release_on_remove=True)
    releases = bare_engine.releases(DESKTOP_GPU)
    began = time.monotonic()
    bare_engine.hand_over(releases, timeout=10.0)
    assert time.monotonic() - began < 5.0  # woken by the close, not by the timeout
    assert ("/sys/class/drm/card0/uevent", "remove", 0) in bare.write_log
    assert kwin.running and not bare.holders([CARD0])
    assert DESKTOP_GPU in bare_engine.bind(DESKTOP_GPU, force=True)
    assert driver_of(bare, DESKTOP_GPU) == "vfio-pci"


def test_a_holder_that_ignores_remove_is_named_after_the_timeout(engine: Engine,
                                                                 host: SimHost) -> None:
    assert host.desktop is not None
    releases = engine.releases(DESKTOP_GPU)
    began = time.monotonic()
    with pytest.raises(InUse, match=rf"did not release /dev/dri/card0 within 0.5 s: "
                                    rf"still held by Xorg \(pid {host.desktop.pid}\)"):
        engine.hand_over(releases, timeout=0.5)
    assert time.monotonic() - began >= 0.5
    assert ("/sys/class/drm/card0/uevent", "remove", 0) in host.write_log
    assert driver_of(host, DESKTOP_GPU) == "nvidia"


def test_a_holder_that_exits_wakes_the_wait_at_once(bare_engine: Engine,
                                                    bare: SimHost) -> None:
    xorg = bare.spawn_holder(SESSION_NODES, comm="Xorg")
    releases = bare_engine.releases(DESKTOP_GPU)
    began = time.monotonic()
    threading.Timer(0.3, xorg.close).start()
    bare_engine.hand_over(releases, timeout=20.0)
    assert time.monotonic() - began < 5.0


def test_without_force_the_refusal_says_how_to_hand_it_over(engine: Engine) -> None:
    with pytest.raises(InUse, match="use force to hand it over: vfiod asks the desktop"):
        engine.bind(DESKTOP_GPU)


def test_the_timeout_comes_from_the_config(host: SimHost, tmp_path: Path) -> None:
    engine = Engine(host, tmp_path / "state",
                    config=parse_config("[handover]\ntimeout = 2.5\n", "vfiod.toml"))
    assert engine.handover_timeout == 2.5


def test_the_timeout_defaults_to_ten_seconds(engine: Engine) -> None:
    assert engine.handover_timeout == 10.0


def test_a_refusal_announces_the_card_again_with_an_add_uevent(engine: Engine,
                                                               host: SimHost) -> None:
    events = host.open_events()
    with pytest.raises(InUse):
        engine.hand_over(engine.releases(DESKTOP_GPU), timeout=0.2)
    drm = [e.action for e in events.receive() if e.subsystem == "drm"]
    assert drm == ["remove", "add"]
    writes = [(path, value) for path, value, _ in host.write_log if path.endswith("/uevent")]
    assert writes == [("/sys/class/drm/card0/uevent", "remove"),
                      ("/sys/class/drm/card0/uevent", "add")]


def test_a_zero_timeout_asks_and_does_not_wait(engine: Engine) -> None:
    began = time.monotonic()
    with pytest.raises(InUse, match="within 0 s"):
        engine.hand_over(engine.releases(DESKTOP_GPU), timeout=0.0)
    assert time.monotonic() - began < 1.0


def test_a_forced_bind_of_a_quarantined_gpu_asks_no_desktop_to_let_go(
        engine: Engine, host: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    # The quarantine refuses the bind whatever the desktop does: it is not asked first,
    # and nothing is read or scanned for a bind that cannot happen.
    engine.records.record_reset(DESKTOP_GPU, engine.device_status(DESKTOP_GPU).ids,
                                ResetResult(method="", rungs=0, healthy=False,
                                            problem="bus: it never came back"), 1)

    def no_scan(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("scanned for a quarantined device")

    monkeypatch.setattr(engine.inventory, "scan_holders", no_scan)
    monkeypatch.setattr(engine.inventory, "fresh", no_scan)
    events = host.open_events()
    with pytest.raises(Quarantined, match=f"{DESKTOP_GPU} is quarantined"):
        engine.releases(DESKTOP_GPU)
    with pytest.raises(Quarantined, match=f"{DESKTOP_GPU} is quarantined"):
        engine.bind(DESKTOP_GPU, force=True)
    assert not any(path.endswith("/uevent") for path, _, _ in host.write_log)
    assert not [e for e in events.receive() if e.subsystem == "drm"]
    assert engine.device_status(DESKTOP_GPU).driver == "nvidia"
