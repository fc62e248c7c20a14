"""Reset methods, reset outcomes and devices that die (kernel-facts.md, Reset)."""

from __future__ import annotations

import errno
import struct

import pytest
from simtest import ASMEDIA, AUDIO, DESKTOP_GPU, GPU, NIC, dev, driver_of, write_errno

from vfiod.sim import SimHost


def config_ids(sim: SimHost, address: str) -> tuple[int, int, int]:
    """(vendor, device, header type & 0x7f) as read from config space."""
    cfg = sim.read_bytes(dev(address, "config"), 64) or b""
    vendor, device = struct.unpack_from("<HH", cfg, 0)
    return vendor, device, cfg[0x0E] & 0x7F


def test_reset_method_lists_the_device_methods_best_first(sim: SimHost) -> None:
    assert sim.read_text(dev(NIC, "reset_method")) == "af_flr pm"
    assert sim.read_text(dev(ASMEDIA, "reset_method")) == "pm bus"


def test_device_without_reset_method_has_no_reset_files(sim: SimHost) -> None:
    assert not sim.exists(dev(AUDIO, "reset_method"))
    assert write_errno(sim, dev(AUDIO, "reset"), "1") == errno.ENOENT


def test_writing_a_method_name_selects_only_that_method(sim: SimHost) -> None:
    sim.write_attr(dev(NIC, "reset_method"), "pm")
    assert sim.read_text(dev(NIC, "reset_method")) == "pm"


def test_writing_a_list_selects_those_methods_in_that_order(sim: SimHost) -> None:
    sim.write_attr(dev(NIC, "reset_method"), "pm af_flr")
    assert sim.read_text(dev(NIC, "reset_method")) == "pm af_flr"


def test_writing_default_restores_every_method(sim: SimHost) -> None:
    sim.write_attr(dev(NIC, "reset_method"), "pm")
    sim.write_attr(dev(NIC, "reset_method"), "default")
    assert sim.read_text(dev(NIC, "reset_method")) == "af_flr pm"


def test_method_the_device_does_not_support_is_einval(sim: SimHost) -> None:
    assert write_errno(sim, dev(NIC, "reset_method"), "bus") == errno.EINVAL


def test_writing_empty_disables_reset_and_reset_is_enotty(sim: SimHost) -> None:
    sim.write_attr(dev(NIC, "reset_method"), "\n")
    assert sim.read_text(dev(NIC, "reset_method")) == ""
    assert write_errno(sim, dev(NIC, "reset"), "1") == errno.ENOTTY


def test_reset_1_with_working_method_succeeds_and_device_stays_healthy(sim: SimHost) -> None:
    assert write_errno(sim, dev(NIC, "reset"), "1") == 0
    assert config_ids(sim, NIC) == (0x8086, 0x15A1, 0)


def test_reset_tries_selected_methods_in_order(sim: SimHost) -> None:
    sim.kernel.set_reset_outcome(NIC, "af_flr", "dies")
    sim.write_attr(dev(NIC, "reset_method"), "pm af_flr")
    sim.write_attr(dev(NIC, "reset"), "1")
    assert config_ids(sim, NIC)[0] == 0x8086  # pm came first and worked


def test_reset_moves_on_when_a_method_fails_enotty(sim: SimHost) -> None:
    sim.kernel.set_reset_outcome(NIC, "af_flr", "enotty")
    sim.kernel.set_reset_outcome(NIC, "pm", "dies")
    sim.write_attr(dev(NIC, "reset"), "1")
    assert config_ids(sim, NIC)[0] == 0xFFFF  # af_flr declined, pm ran


def test_reset_is_enotty_when_every_method_fails_enotty(sim: SimHost) -> None:
    for method in ("af_flr", "pm"):
        sim.kernel.set_reset_outcome(NIC, method, "enotty")
    assert write_errno(sim, dev(NIC, "reset"), "1") == errno.ENOTTY


def test_bus_reset_of_gpu_fails_enotty_while_audio_function_shares_the_bus(
        sim: SimHost) -> None:
    assert sim.read_text(dev(GPU, "reset_method")) == "bus"
    assert write_errno(sim, dev(GPU, "reset"), "1") == errno.ENOTTY


def test_bus_reset_of_gpu_works_once_it_is_alone_on_its_bus(sim: SimHost) -> None:
    sim.write_attr(dev(AUDIO, "remove"), "1")
    assert write_errno(sim, dev(GPU, "reset"), "1") == 0


def test_bus_reset_of_device_alone_behind_its_bridge_works(sim: SimHost) -> None:
    sim.write_attr(dev(ASMEDIA, "reset_method"), "bus")
    assert write_errno(sim, dev(ASMEDIA, "reset"), "1") == 0


def test_device_that_dies_in_reset_reads_all_ones(sim: SimHost) -> None:
    sim.kernel.set_reset_outcome(NIC, "af_flr", "dies")
    assert write_errno(sim, dev(NIC, "reset"), "1") == 0  # the kernel saw nothing wrong
    assert config_ids(sim, NIC) == (0xFFFF, 0xFFFF, 127)
    assert sim.read_bytes(dev(NIC, "config")) == b"\xff" * 256


def test_killed_device_reads_all_ones_but_sysfs_ids_stay(sim: SimHost) -> None:
    sim.kernel.kill_device(GPU)
    assert config_ids(sim, GPU) == (0xFFFF, 0xFFFF, 127)
    assert sim.read_text(dev(GPU, "vendor")) == "0x10de"  # cached by the kernel


def test_dead_device_revived_by_bus_reset(sim: SimHost) -> None:
    sim.kernel.kill_device(ASMEDIA)
    sim.write_attr(dev(ASMEDIA, "reset_method"), "bus")
    sim.write_attr(dev(ASMEDIA, "reset"), "1")
    assert config_ids(sim, ASMEDIA)[0] == 0x1B21


def test_dead_device_not_revived_by_other_methods(sim: SimHost) -> None:
    sim.kernel.kill_device(ASMEDIA)
    sim.write_attr(dev(ASMEDIA, "reset_method"), "pm")
    sim.write_attr(dev(ASMEDIA, "reset"), "1")
    assert config_ids(sim, ASMEDIA)[0] == 0xFFFF


def test_dead_device_revived_by_remove_and_rescan(sim: SimHost) -> None:
    sim.kernel.kill_device(GPU)
    sim.write_attr(dev(GPU, "remove"), "1")
    sim.write_attr("/sys/bus/pci/rescan", "1")
    assert config_ids(sim, GPU)[0] == 0x10DE
    assert driver_of(sim, GPU) == "nvidia"


def test_dead_device_fails_host_driver_probe(sim: SimHost) -> None:
    sim.kernel.kill_device(GPU)
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    sim.write_attr("/sys/bus/pci/drivers_probe", GPU)
    assert driver_of(sim, GPU) is None
    assert write_errno(sim, "/sys/bus/pci/drivers/nvidia/bind", GPU) == errno.ENODEV


def test_explicit_bus_outcome_overrides_the_shared_bus_rule(sim: SimHost) -> None:
    sim.kernel.set_reset_outcome(DESKTOP_GPU, "bus", "ok")
    assert write_errno(sim, dev(DESKTOP_GPU, "reset"), "1") == 0


def test_unknown_reset_outcome_is_refused(sim: SimHost) -> None:
    with pytest.raises(ValueError):
        sim.kernel.set_reset_outcome(NIC, "pm", "explodes")
