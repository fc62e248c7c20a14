"""Binding and unbinding whole IOMMU groups on the simulated seed-x99 workstation."""

from __future__ import annotations

import pytest

from vfiod.engine import Engine
from vfiod.errors import GroupNotViable, InvalidArgument
from vfiod.records import State
from vfiod.sim import SimHost

from .placement import driver_of, override_of

GPU, GPU_AUDIO = "0000:06:00.0", "0000:06:00.1"


def test_guest_gpu_binds_with_its_hdmi_audio(engine: Engine, host: SimHost) -> None:
    moved = engine.bind(GPU)
    assert moved == [GPU, GPU_AUDIO]
    assert driver_of(host, GPU) == "vfio-pci"
    assert driver_of(host, GPU_AUDIO) == "vfio-pci"


def test_guest_gpu_returns_to_nvidia_and_snd_hda_intel(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    moved = engine.unbind(GPU)
    assert moved == [GPU, GPU_AUDIO]
    assert driver_of(host, GPU) == "nvidia"
    assert driver_of(host, GPU_AUDIO) == "snd_hda_intel"
    assert override_of(host, GPU) is None and override_of(host, GPU_AUDIO) is None


def test_short_address_names_the_same_device(engine: Engine, host: SimHost) -> None:
    assert engine.bind("06:00.1") == [GPU, GPU_AUDIO]


def test_ssata_controller_takes_the_chipset_function_of_its_group(
        engine: Engine, host: SimHost) -> None:
    moved = engine.bind("0000:00:11.4")
    assert moved == ["0000:00:11.0", "0000:00:11.4"]
    assert driver_of(host, "0000:00:11.0") == "vfio-pci"
    assert driver_of(host, "0000:00:11.4") == "vfio-pci"


def test_function_without_a_host_driver_returns_unbound(engine: Engine, host: SimHost) -> None:
    engine.bind("0000:00:11.4")
    engine.unbind("0000:00:11.4")
    assert driver_of(host, "0000:00:11.0") is None
    assert driver_of(host, "0000:00:11.4") == "ahci"


def test_vfio_pci_is_loaded_when_missing(engine: Engine, host: SimHost) -> None:
    assert not host.module_loaded("vfio_pci")
    engine.bind(GPU)
    assert host.module_loaded("vfio_pci")


def test_binding_a_bound_group_again_moves_nothing(engine: Engine) -> None:
    engine.bind(GPU)
    assert engine.bind(GPU) == []


def test_unbinding_a_device_on_its_host_driver_moves_nothing(engine: Engine) -> None:
    assert engine.unbind(GPU) == []


def test_single_function_of_a_shared_group_is_not_viable(engine: Engine, host: SimHost) -> None:
    with pytest.raises(GroupNotViable, match="0000:06:00.1 \\(snd_hda_intel\\)"):
        engine.bind(GPU, group=False)
    assert driver_of(host, GPU) == "nvidia"


def test_single_function_binds_once_its_group_mates_are_on_vfio(engine: Engine,
                                                                 host: SimHost) -> None:
    engine.bind(GPU)
    engine.unbind(GPU, group=False)
    assert driver_of(host, GPU) == "nvidia" and driver_of(host, GPU_AUDIO) == "vfio-pci"
    assert engine.bind(GPU, group=False) == [GPU]


def test_bridges_stay_on_their_driver(engine: Engine) -> None:
    bridges = [s.address for s in engine.status() if s.is_bridge]
    assert bridges
    with pytest.raises(InvalidArgument, match="bridge"):
        engine.bind(bridges[0])


def test_the_host_bridge_is_a_bridge_and_is_never_bound(engine: Engine,
                                                       host: SimHost) -> None:
    host_bridge = "0000:00:00.0"  # class 0x060000, alone in IOMMU group 0
    assert engine.device_status(host_bridge).is_bridge
    with pytest.raises(InvalidArgument, match="bridge"):
        engine.bind(host_bridge)
    assert driver_of(host, host_bridge) is None
    assert not any(path.endswith("driver_override") for path, _, _ in host.write_log)


def test_unbind_returns_the_recorded_driver_after_a_restart(
        engine: Engine, host: SimHost, tmp_path) -> None:
    engine.bind(GPU)
    restarted = Engine(host, tmp_path / "state")
    restarted.recover()
    restarted.unbind(GPU)
    assert driver_of(host, GPU) == "nvidia"


def test_unbind_without_a_record_lets_the_kernel_choose(engine: Engine, host: SimHost,
                                                         tmp_path) -> None:
    engine.bind(GPU)
    stranger = Engine(host, tmp_path / "other-state")  # as if the early-boot shim bound it
    stranger.unbind(GPU)
    assert driver_of(host, GPU) == "nvidia"
    assert driver_of(host, GPU_AUDIO) == "snd_hda_intel"


def test_status_shows_states_and_groups(engine: Engine) -> None:
    engine.bind(GPU)
    rows = {s.address: s for s in engine.status()}
    assert rows[GPU].state is State.VFIO and rows[GPU].iommu_group == 31
    assert rows[GPU].host_driver == "nvidia"
    assert rows["0000:00:19.0"].state is State.HOST
    assert rows["0000:00:11.0"].state is State.UNBOUND


def test_status_names_devices_from_pci_ids(engine: Engine) -> None:
    row = engine.device_status(GPU)
    assert "GeForce GTX 1080 Ti" in row.name
    assert row.ids == "10de:1b06"


def test_a_guest_holding_the_group_shows_as_guest(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    with host.spawn_holder(["/dev/vfio/31"], comm="qemu-system-x86") as guest:
        engine.holders_changed()
        row = engine.device_status(GPU)
        assert row.state is State.GUEST
        assert row.holder == f"qemu-system-x86 (pid {guest.pid})"
        assert row.holder_pid == guest.pid


def test_status_says_what_the_host_uses_a_device_for(engine: Engine) -> None:
    rows = {s.address: s for s in engine.status()}
    assert "mounted on / (ext4)" in rows["0000:00:1f.2"].used_by
    assert "Xorg" in rows["0000:05:00.0"].used_by
    assert "default route" in rows["0000:00:19.0"].used_by
    assert rows["0000:06:00.0"].used_by == ""


def test_an_unbind_with_nothing_to_move_clears_a_refused_resets_error(engine: Engine) -> None:
    # A GPU on its host driver cannot be reset (the bus is shared with its audio): the
    # error mark that leaves must go with the next call that succeeds, even one that
    # has nothing to move (found by the torture suite's concurrent clients).
    from vfiod.errors import ResetFailed

    with pytest.raises(ResetFailed):
        engine.reset(GPU)
    assert engine.device_status(GPU).state is State.ERROR
    assert engine.unbind(GPU) == []
    assert [engine.device_status(a).state for a in (GPU, GPU_AUDIO)] == [State.HOST] * 2

