"""Reset tries the kernel's methods best first and checks the device came back."""

from __future__ import annotations

import errno

import pytest

from vfiod.engine import Engine
from vfiod.errors import HostWriteError, InUse, ResetFailed
from vfiod.records import State
from vfiod.sim import SimHost

from .placement import driver_of

GPU, GPU_AUDIO = "0000:06:00.0", "0000:06:00.1"  # one slot, one bus, IOMMU group 31
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


def test_gpu_bus_reset_fails_while_its_audio_function_shares_the_bus_on_its_host_driver(
        engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    engine.unbind(GPU_AUDIO, group=False)
    with pytest.raises(ResetFailed, match="bus: ENOTTY \\(another function shares the bus\\)"):
        engine.reset(GPU)
    assert not any(value == "hot reset" for _, value, _ in host.write_log)


def test_gpu_reset_with_its_audio_on_its_host_driver_names_the_audio_and_its_driver(
        engine: Engine) -> None:
    engine.bind(GPU)
    engine.unbind(GPU_AUDIO, group=False)
    with pytest.raises(ResetFailed) as failure:
        engine.reset(GPU)
    message = str(failure.value)
    assert ("0000:06:00.1 (NVIDIA Corporation GP102 HDMI Audio Controller, snd_hda_intel)"
            in message)
    assert "vfioctl bind 0000:06:00.1" in message
    assert engine.device_status(GPU).state is State.ERROR


def test_gpu_bound_with_its_audio_is_reset_through_a_vfio_hot_reset(engine: Engine,
                                                                    host: SimHost) -> None:
    engine.bind(GPU)
    assert engine.reset(GPU) == "bus"
    assert ("/dev/vfio/31", "hot reset", 0) in host.write_log
    for address in (GPU, GPU_AUDIO):
        status = engine.device_status(address)
        assert status.healthy and status.state is State.VFIO and not status.error


def test_dead_gpu_comes_back_from_a_vfio_hot_reset(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    host.kernel.kill_device(GPU)
    engine.rescan()
    assert not engine.device_status(GPU).healthy
    assert engine.reset(GPU) == "bus"
    assert engine.device_status(GPU).healthy
    assert engine.device_status(GPU).state is State.VFIO


def test_hot_reset_of_a_function_not_on_vfio_is_eperm(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    engine.unbind(GPU_AUDIO, group=False)
    with pytest.raises(HostWriteError) as failure:
        host.vfio_hot_reset(GPU)
    assert failure.value.errno == errno.EPERM
    assert host.write_log[-1] == ("/dev/vfio/31", "hot reset", errno.EPERM)


def test_hot_reset_while_a_guest_holds_the_group_is_ebusy(engine: Engine,
                                                         host: SimHost) -> None:
    engine.bind(GPU)
    with (host.spawn_holder(["/dev/vfio/31"], comm="qemu-system-x86"),
          pytest.raises(HostWriteError) as failure):
        host.vfio_hot_reset(GPU)
    assert failure.value.errno == errno.EBUSY


def test_a_device_every_method_kills_comes_back_by_remove_and_rescan(engine: Engine,
                                                                     host: SimHost) -> None:
    usb = "0000:11:00.0"  # alone below root port 00:1c.4: pm, then bus
    engine.bind(usb)
    for method in _method_list(engine, usb):
        host.kernel.set_reset_outcome(usb, method, "dies")
    assert engine.reset(usb) == "remove_rescan"
    assert driver_of(host, usb) == "vfio-pci"
    assert engine.device_status(usb).healthy
    assert engine.device_status(usb).state is State.VFIO


def test_reset_that_kills_the_device_and_nothing_revives_it_fails(engine: Engine,
                                                                  host: SimHost) -> None:
    engine.bind(AUDIO)  # on the root bus: no bus reset, and no rescan of the whole machine
    for method in _method_list(engine, AUDIO):
        host.kernel.set_reset_outcome(AUDIO, method, "dies")
    with pytest.raises(ResetFailed, match="all ones.*root bus.*reboot the host"):
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
    assert not any(path.endswith("/reset") or value == "hot reset"
                   for path, value, _ in host.write_log)
    assert driver_of(host, GPU) == driver_of(host, GPU_AUDIO) == "vfio-pci"


def test_reset_of_the_desktop_gpu_is_refused(engine: Engine) -> None:
    with pytest.raises(InUse, match="Xorg"):
        engine.reset("0000:05:00.0")


def test_vfiods_own_group_fds_make_no_guest(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    with open(host.real_path("/dev/vfio/31"), "rb"):  # what a hot reset holds for a moment
        engine.holders_changed()
        assert engine.device_status(GPU).state is State.VFIO
        assert engine.reset(GPU) == "bus"
    assert engine.release_actions() == []
