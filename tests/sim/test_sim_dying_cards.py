"""The dying-cards machine: cards that die like real ones, and the kernel files the reset
ladder uses (drivers_autoprobe, a bus's own rescan, device_specific with vendor-reset)."""

from __future__ import annotations

import errno
import struct
import time

import pytest
from simtest import dev, driver_of, to_vfio, write_errno

from vfiod.sim import SimHost

AMD, AMD_AUDIO = "0000:01:00.0", "0000:01:00.1"
NVME = "0000:03:00.0"
USB = "0000:04:00.0"


def vendor_in_config(sim: SimHost, address: str) -> int:
    return int(struct.unpack_from("<H", sim.read_bytes(dev(address, "config"), 2) or b"\0\0")[0])


def test_pcie_functions_have_4096_bytes_of_config_space(dying: SimHost) -> None:
    assert len(dying.read_bytes(dev(AMD, "config")) or b"") == 4096


def test_amd_card_dies_in_an_flr_once_a_guest_used_it(dying: SimHost) -> None:
    assert write_errno(dying, dev(AMD, "reset"), "1") == 0
    assert vendor_in_config(dying, AMD) == 0x1002
    dying.kernel.guest_used([AMD])
    assert write_errno(dying, dev(AMD, "reset"), "1") == 0  # success, as the bug reports
    assert vendor_in_config(dying, AMD) == 0xFFFF


def test_device_specific_is_refused_without_vendor_reset(dying: SimHost) -> None:
    assert write_errno(dying, dev(AMD, "reset_method"), "device_specific") == errno.EINVAL


def test_device_specific_with_vendor_reset_brings_the_amd_card_back(dying: SimHost) -> None:
    dying.kernel.guest_used([AMD])
    dying.write_attr(dev(AMD, "reset"), "1")
    dying.load_module("vendor_reset")
    dying.write_attr(dev(AMD, "reset_method"), "device_specific")
    assert dying.read_text(dev(AMD, "reset_method")) == "device_specific"
    dying.write_attr(dev(AMD, "reset"), "1")
    assert vendor_in_config(dying, AMD) == 0x1002


def test_nvme_flr_waits_the_kernels_60_seconds_then_is_enotty(dying: SimHost) -> None:
    dying.write_attr(dev(NVME, "reset_method"), "flr")
    started = time.monotonic()
    assert write_errno(dying, dev(NVME, "reset"), "1") == errno.ENOTTY
    assert time.monotonic() - started >= 60 * dying.kernel.time_scale


def test_a_never_back_card_loses_its_bars_and_logs_a_completion_timeout(
        dying: SimHost) -> None:
    dying.kernel.guest_used([USB])
    dying.write_attr(dev(USB, "reset"), "1")
    cfg = dying.read_bytes(dev(USB, "config")) or b""
    assert struct.unpack_from("<H", cfg, 0)[0] == 0x1912
    assert struct.unpack_from("<I", cfg, 0x10)[0] == 0
    assert struct.unpack_from("<I", cfg, 0x104)[0] == 1 << 14


def test_a_pci_rescan_probes_what_it_adds_whatever_drivers_autoprobe_says(
        dying: SimHost) -> None:
    # pci_bus_add_device attaches a re-added device itself (seen on 6.1).
    dying.write_attr("/sys/bus/pci/drivers_autoprobe", "0")
    assert dying.read_text("/sys/bus/pci/drivers_autoprobe") == "0"
    dying.write_attr(dev(NVME, "remove"), "1")
    dying.write_attr("/sys/class/pci_bus/0000:03/rescan", "1")
    assert driver_of(dying, NVME) == "nvme"


def test_with_drivers_autoprobe_off_a_loaded_driver_binds_nothing_by_itself(
        dying: SimHost) -> None:
    dying.write_attr(dev(NVME, "driver/unbind"), NVME)
    dying.write_attr(dev(NVME, "driver_override"), "vfio-pci")
    dying.write_attr("/sys/bus/pci/drivers_autoprobe", "0")
    dying.load_module("vfio-pci")
    assert driver_of(dying, NVME) is None
    dying.write_attr("/sys/bus/pci/drivers_probe", NVME)
    assert driver_of(dying, NVME) == "vfio-pci"


def test_a_rescan_forgets_the_override_and_gives_the_host_driver(
        dying: SimHost) -> None:
    to_vfio(dying, NVME)
    dying.write_attr(dev(NVME, "remove"), "1")
    dying.write_attr("/sys/class/pci_bus/0000:03/rescan", "1")
    assert driver_of(dying, NVME) == "nvme"


def test_a_bus_rescan_does_not_bring_back_a_device_removed_on_another_bus(
        dying: SimHost) -> None:
    dying.write_attr(dev(USB, "remove"), "1")
    dying.write_attr(dev(NVME, "remove"), "1")
    dying.write_attr("/sys/class/pci_bus/0000:03/rescan", "1")
    assert dying.exists(dev(NVME)) and not dying.exists(dev(USB))


def test_the_root_bus_s_own_rescan_brings_back_devices_on_every_bus(
        dying: SimHost) -> None:
    dying.write_attr(dev(USB, "remove"), "1")
    dying.write_attr(dev(NVME, "remove"), "1")
    dying.write_attr("/sys/class/pci_bus/0000:00/rescan", "1")
    assert dying.exists(dev(NVME)) and dying.exists(dev(USB))


def test_the_audio_function_of_the_amd_card_is_on_snd_hda_intel(dying: SimHost) -> None:
    assert driver_of(dying, AMD_AUDIO) == "snd_hda_intel"
