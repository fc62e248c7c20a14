"""Host-driver records are a preference: the kernel's choice wins when they are stale."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.errors import Failed
from vfiod.sim import SimHost

from .placement import driver_of

GPU = "0000:06:00.0"
AUDIO = "0000:06:00.1"
SPSR = "0000:00:11.0"  # the chipset function no driver claims


def _stale_nouveau(host: SimHost, tmp_path: Path) -> Engine:
    """The GPU on vfio-pci with `nouveau` recorded: the host has since moved to nvidia."""
    engine = Engine(host, tmp_path / "state")
    engine.bind(GPU)
    engine.journal.remember_host_drivers({GPU: "nouveau"})
    return Engine(host, tmp_path / "state")  # as a restarted daemon reads it


def _said(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_a_stale_record_gives_way_to_the_kernel_s_choice_said_once_and_updated(
        host: SimHost, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = _stale_nouveau(host, tmp_path)
    caplog.set_level(logging.INFO, logger="vfiod")
    assert sorted(engine.unbind(GPU)) == [GPU, AUDIO]
    assert driver_of(host, GPU) == "nvidia"
    assert _said(caplog, "nouveau") == 1
    assert engine.journal.host_driver(GPU) == "nvidia"
    assert Engine(host, tmp_path / "state").journal.host_driver(GPU) == "nvidia"  # on disk
    engine.bind(GPU)
    engine.unbind(GPU)
    assert driver_of(host, GPU) == "nvidia"
    assert _said(caplog, "nouveau") == 1  # once, not at every Unbind


def test_host_driver_shows_the_kernel_s_choice_when_the_record_cannot_load(
        host: SimHost, tmp_path: Path) -> None:
    engine = _stale_nouveau(host, tmp_path)
    assert engine.journal.host_driver(GPU) == "nouveau"
    assert engine.device_status(GPU).host_driver == "nvidia"


def test_host_driver_shows_a_record_that_can_load_although_the_kernel_would_choose_another(
        host: SimHost, tmp_path: Path) -> None:
    engine = Engine(host, tmp_path / "state")
    engine.bind("0000:11:00.0")
    # Unbind tries a loadable record first (it binds directly, as a user once chose).
    engine.journal.remember_host_drivers({"0000:11:00.0": "e1000e"})
    assert engine.device_status("0000:11:00.0").host_driver == "e1000e"


def test_host_driver_without_a_record_is_the_kernel_s_choice(host: SimHost,
                                                              tmp_path: Path) -> None:
    Engine(host, tmp_path / "first").bind(GPU)
    stranger = Engine(host, tmp_path / "other")  # as if the early-boot shim had bound it
    assert stranger.device_status(GPU).host_driver == "nvidia"
    assert stranger.device_status(AUDIO).host_driver == "snd_hda_intel"


def test_host_driver_is_empty_when_nothing_would_bind(host: SimHost, tmp_path: Path) -> None:
    engine = Engine(host, tmp_path / "state")
    engine.bind(SPSR)
    assert engine.device_status(SPSR).host_driver == ""


def test_a_device_the_host_binds_by_itself_updates_its_record(host: SimHost,
                                                                tmp_path: Path) -> None:
    engine = _stale_nouveau(host, tmp_path)
    # Someone else (driverctl, a script) gives the GPU back to the host.
    host.write_attr(f"/sys/bus/pci/devices/{GPU}/driver_override", "\n")
    host.write_attr(f"/sys/bus/pci/devices/{GPU}/driver/unbind", GPU)
    host.write_attr("/sys/bus/pci/drivers_probe", GPU)
    engine.reread([GPU])
    assert engine.journal.host_driver(GPU) == "nvidia"


def test_when_nothing_binds_at_all_unbind_fails_and_puts_the_group_back(
        host: SimHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _stale_nouveau(host, tmp_path)
    probe = engine.transactions._probe_host_driver
    calls: list[str] = []

    def nothing_binds_the_first_time(a: str, want: str | None, modalias: str) -> str | None:
        calls.append(a)
        return None if len(calls) == 1 else probe(a, want, modalias)

    monkeypatch.setattr(engine.transactions, "_probe_host_driver", nothing_binds_the_first_time)
    with pytest.raises(Failed, match="neither its host driver nouveau nor any other"):
        engine.unbind(GPU)
    assert [driver_of(host, a) for a in (GPU, AUDIO)] == ["vfio-pci", "vfio-pci"]
