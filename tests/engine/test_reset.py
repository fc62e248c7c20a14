"""Reset tries the kernel's methods best first and checks the device came back."""

from __future__ import annotations

import pytest

from vfiod.engine import Engine
from vfiod.errors import InUse, ResetFailed
from vfiod.records import State
from vfiod.sim import SimHost

GPU = "0000:06:00.0"


def _method_list(engine: Engine, address: str) -> list[str]:
    return engine.device_status(address).reset_methods


def test_reset_returns_the_first_method_that_works(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    methods = _method_list(engine, GPU)
    assert methods
    assert engine.reset(GPU) in methods


def test_reset_falls_through_a_failing_method(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    first, *rest = _method_list(engine, GPU)
    if not rest:
        pytest.skip("the profile gives this device a single method")
    host.kernel.set_reset_outcome(GPU, first, "enotty")
    assert engine.reset(GPU) == rest[0]


def test_reset_restores_the_default_method_selection(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    before = host.read_text(f"/sys/bus/pci/devices/{GPU}/reset_method")
    engine.reset(GPU)
    assert host.read_text(f"/sys/bus/pci/devices/{GPU}/reset_method") == before


def test_reset_that_kills_the_device_and_nothing_revives_it_fails(engine: Engine,
                                                                  host: SimHost) -> None:
    engine.bind(GPU)
    for method in _method_list(engine, GPU):
        host.kernel.set_reset_outcome(GPU, method, "dies")
    with pytest.raises(ResetFailed, match="all ones"):
        engine.reset(GPU)
    assert engine.device_status(GPU).state is State.ERROR
    assert not engine.device_status(GPU).healthy


def test_reset_refused_while_a_guest_holds_the_group(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    with host.spawn_holder(["/dev/vfio/31"], comm="qemu-system-x86"):
        with pytest.raises(InUse, match="qemu-system-x86"):
            engine.reset(GPU)


def test_reset_of_the_desktop_gpu_is_refused(engine: Engine) -> None:
    with pytest.raises(InUse, match="Xorg"):
        engine.reset("0000:05:00.0")
