"""Reset tries the kernel's methods best first and checks the device came back."""

from __future__ import annotations

import pytest

from vfiod.engine import Engine
from vfiod.errors import InUse, ResetFailed
from vfiod.records import State
from vfiod.sim import SimHost

GPU = "0000:06:00.0"
AUDIO = "0000:00:1b.0"  # onboard audio: flr, then pm


def _method_list(engine: Engine, address: str) -> list[str]:
    return engine.device_status(address).reset_methods


def test_reset_returns_the_first_method_that_works(engine: Engine) -> None:
    engine.bind(AUDIO)
    assert _method_list(engine, AUDIO) == ["flr", "pm"]
    assert engine.reset(AUDIO) == "flr"


def test_reset_falls_through_a_failing_method(engine: Engine, host: SimHost) -> None:
    engine.bind(AUDIO)
    host.kernel.set_reset_outcome(AUDIO, "flr", "enotty")
    assert engine.reset(AUDIO) == "pm"


def test_reset_restores_the_default_method_selection(engine: Engine, host: SimHost) -> None:
    engine.bind(AUDIO)
    before = host.read_text(f"/sys/bus/pci/devices/{AUDIO}/reset_method")
    host.kernel.set_reset_outcome(AUDIO, "flr", "enotty")
    engine.reset(AUDIO)
    assert host.read_text(f"/sys/bus/pci/devices/{AUDIO}/reset_method") == before


def test_gpu_bus_reset_fails_while_its_audio_function_shares_the_bus(engine: Engine) -> None:
    engine.bind(GPU)
    with pytest.raises(ResetFailed, match="bus: ENOTTY \\(another function shares the bus\\)"):
        engine.reset(GPU)


def test_reset_that_kills_the_device_and_nothing_revives_it_fails(engine: Engine,
                                                                  host: SimHost) -> None:
    engine.bind(AUDIO)
    for method in _method_list(engine, AUDIO):
        host.kernel.set_reset_outcome(AUDIO, method, "dies")
    with pytest.raises(ResetFailed, match="all ones"):
        engine.reset(AUDIO)
    assert engine.device_status(AUDIO).state is State.ERROR
    assert not engine.device_status(AUDIO).healthy


def test_a_device_killed_by_one_method_is_revived_by_a_bus_reset(engine: Engine,
                                                                 host: SimHost) -> None:
    usb = "0000:11:00.0"  # alone on its bus: pm, then bus
    engine.bind(usb)
    host.kernel.set_reset_outcome(usb, "pm", "dies")
    assert engine.reset(usb) == "bus"
    assert engine.device_status(usb).healthy


def test_reset_refused_while_a_guest_holds_the_group(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    with host.spawn_holder(["/dev/vfio/31"], comm="qemu-system-x86"):
        with pytest.raises(InUse, match="qemu-system-x86"):
            engine.reset(GPU)


def test_reset_of_the_desktop_gpu_is_refused(engine: Engine) -> None:
    with pytest.raises(InUse, match="Xorg"):
        engine.reset("0000:05:00.0")
