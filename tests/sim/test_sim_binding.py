"""Binding and the errno of bad writes: one test per line of kernel-facts.md."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

import pytest
from simtest import AUDIO, GPU, dev, driver_of, to_host, to_vfio, write_errno

from vfiod.sim import SimHost


# -- Binding ------------------------------------------------------------------------------
def test_override_unbind_drivers_probe_moves_device_to_vfio_pci(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    assert driver_of(sim, GPU) == "vfio-pci"
    assert sim.exists(f"/sys/bus/pci/drivers/vfio-pci/{GPU}")


def test_clearing_override_unbind_drivers_probe_returns_device_to_host_driver(
        sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    to_host(sim, GPU)
    assert driver_of(sim, GPU) == "nvidia"
    assert sim.read_text(dev(GPU, "driver_override")) == "(null)"


def test_drivers_probe_succeeds_without_binding_when_vfio_pci_not_loaded(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert write_errno(sim, "/sys/bus/pci/drivers_probe", GPU) == 0
    assert driver_of(sim, GPU) is None


def test_drivers_probe_succeeds_without_binding_when_no_driver_matches(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver_override"), "none")
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert write_errno(sim, "/sys/bus/pci/drivers_probe", GPU) == 0
    assert driver_of(sim, GPU) is None


def test_modprobe_vfio_pci_binds_device_whose_override_is_pending(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    sim.write_attr("/sys/bus/pci/drivers_probe", GPU)
    sim.load_module("vfio_pci")
    assert driver_of(sim, GPU) == "vfio-pci"
    assert driver_of(sim, AUDIO) == "snd_hda_intel"  # no override: untouched


def test_group_node_appears_with_first_member_on_vfio_pci(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    assert not sim.exists("/dev/vfio/31")
    to_vfio(sim, GPU)
    assert sim.exists("/dev/vfio/31")


def test_group_node_disappears_when_last_member_leaves_vfio_pci(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    to_vfio(sim, AUDIO)
    to_host(sim, GPU)
    assert sim.exists("/dev/vfio/31")
    to_host(sim, AUDIO)
    assert not sim.exists("/dev/vfio/31")


def test_group_node_mode_is_0600(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    assert stat.S_IMODE(os.stat(sim.real_path("/dev/vfio/31")).st_mode) == 0o600


def test_remove_and_rescan_forget_driver_override(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    sim.write_attr(dev(GPU, "remove"), "1")
    assert not sim.exists(dev(GPU))
    sim.write_attr("/sys/bus/pci/rescan", "1")
    assert driver_of(sim, GPU) == "nvidia"
    assert sim.read_text(dev(GPU, "driver_override")) == "(null)"


def test_bridges_stay_on_pcieport_when_vfio_pci_claims_by_id(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    sim.write_attr("/sys/bus/pci/drivers/vfio-pci/new_id", "10b5 8747")
    assert driver_of(sim, "0000:04:10.0") == "pcieport"


# -- errno of bad writes ----------------------------------------------------------------
@pytest.mark.parametrize("value", ["0000:42:00.0", "garbage", "06:00.0", f"{GPU} "])
def test_drivers_probe_of_nonexistent_address_or_garbage_is_enodev(sim: SimHost,
                                                                   value: str) -> None:
    assert write_errno(sim, "/sys/bus/pci/drivers_probe", value) == errno.ENODEV


def test_drivers_probe_of_bound_device_succeeds_and_changes_nothing(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    assert write_errno(sim, "/sys/bus/pci/drivers_probe", GPU + "\n") == 0
    assert driver_of(sim, GPU) == "nvidia"


def test_unbind_from_driver_device_is_not_bound_to_is_enodev(sim: SimHost) -> None:
    assert write_errno(sim, "/sys/bus/pci/drivers/snd_hda_intel/unbind", GPU) == errno.ENODEV
    assert driver_of(sim, GPU) == "nvidia"


def test_unbind_of_no_such_device_is_enodev(sim: SimHost) -> None:
    assert write_errno(sim, "/sys/bus/pci/drivers/nvidia/unbind", "0000:42:00.0") == errno.ENODEV


def test_driver_unbind_of_device_without_driver_is_enoent_at_open(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert not os.path.lexists(sim.real_path(dev(GPU, "driver")))
    assert write_errno(sim, dev(GPU, "driver/unbind"), GPU) == errno.ENOENT


def test_vfio_pci_bind_of_device_already_bound_is_ebusy(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    assert write_errno(sim, "/sys/bus/pci/drivers/vfio-pci/bind", GPU) == errno.EBUSY


def test_bind_when_override_names_another_driver_is_enodev(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert write_errno(sim, "/sys/bus/pci/drivers/nvidia/bind", GPU) == errno.ENODEV
    assert driver_of(sim, GPU) is None


def test_vfio_pci_bind_with_empty_override_is_enodev(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert write_errno(sim, "/sys/bus/pci/drivers/vfio-pci/bind", GPU) == errno.ENODEV


def test_vfio_pci_bind_with_override_binds(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert write_errno(sim, "/sys/bus/pci/drivers/vfio-pci/bind", GPU) == 0
    assert driver_of(sim, GPU) == "vfio-pci"


def test_host_driver_bind_of_matching_unbound_device_binds(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert write_errno(sim, "/sys/bus/pci/drivers/nvidia/bind", GPU) == 0
    assert driver_of(sim, GPU) == "nvidia"


@pytest.mark.parametrize("value", ["0", "2", "yes", " 1", "1\n\n"])
def test_reset_with_value_other_than_1_is_einval(sim: SimHost, value: str) -> None:
    assert write_errno(sim, dev("0000:00:19.0", "reset"), value) == errno.EINVAL


def test_unknown_reset_method_name_is_einval(sim: SimHost) -> None:
    assert write_errno(sim, dev("0000:00:19.0", "reset_method"), "warm_boot") == errno.EINVAL
    assert sim.read_text(dev("0000:00:19.0", "reset_method")) == "af_flr pm"


def test_5000_byte_driver_override_is_einval(sim: SimHost) -> None:
    assert write_errno(sim, dev(GPU, "driver_override"), "x" * 5000) == errno.EINVAL
    assert sim.read_text(dev(GPU, "driver_override")) == "(null)"


@pytest.mark.parametrize("value", ["garbage", "10de", "10de:1b06"])
def test_malformed_new_id_is_einval(sim: SimHost, value: str) -> None:
    sim.load_module("vfio-pci")
    assert write_errno(sim, "/sys/bus/pci/drivers/vfio-pci/new_id", value) == errno.EINVAL


@pytest.mark.parametrize("path", ["/sys/bus/pci/drivers_probe", dev(GPU, "driver_override"),
                                  dev(GPU, "reset_method"), "/sys/bus/pci/drivers/nvidia/unbind"])
def test_zero_length_write_succeeds_and_changes_nothing(sim: SimHost, path: str) -> None:
    # sysfs_kf_write returns 0 before the attribute's store sees an empty buffer.
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    assert write_errno(sim, path, "") == 0
    assert sim.read_text(dev(GPU, "driver_override")) == "vfio-pci"
    assert sim.read_text(dev(GPU, "reset_method")) == "bus"
    assert driver_of(sim, GPU) == "nvidia"


def test_remove_id_of_id_never_added_is_enodev(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    assert write_errno(sim, "/sys/bus/pci/drivers/vfio-pci/remove_id", "10de 1b06") == errno.ENODEV


def test_malformed_remove_id_is_einval(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    assert write_errno(sim, "/sys/bus/pci/drivers/vfio-pci/remove_id", "10de") == errno.EINVAL


# -- driver_override and dynamic ids in detail ---------------------------------------------
def test_driver_override_reads_null_when_unset(sim: SimHost) -> None:
    assert sim.read_text(dev(GPU, "driver_override")) == "(null)"


def test_driver_override_keeps_text_before_first_newline(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci\nignored")
    assert sim.read_text(dev(GPU, "driver_override")) == "vfio-pci"


def test_driver_override_newline_clears_it(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    sim.write_attr(dev(GPU, "driver_override"), "\n")
    assert sim.read_text(dev(GPU, "driver_override")) == "(null)"


def test_new_id_binds_every_matching_unbound_device_but_respects_overrides(
        sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    for gpu in ("0000:06:00.0", "0000:09:00.0"):
        sim.write_attr(dev(gpu, "driver/unbind"), gpu)
    sim.write_attr(dev("0000:09:00.0", "driver_override"), "nvidia")
    sim.write_attr("/sys/bus/pci/drivers/vfio-pci/new_id", "10de 1b06")
    assert driver_of(sim, "0000:06:00.0") == "vfio-pci"
    assert driver_of(sim, "0000:09:00.0") is None
    assert driver_of(sim, "0000:05:00.0") == "nvidia"  # bound devices stay


def test_new_id_already_matched_by_driver_table_is_eexist(sim: SimHost) -> None:
    assert write_errno(sim, "/sys/bus/pci/drivers/e1000e/new_id", "8086 15a1") == errno.EEXIST


def test_remove_id_forgets_a_dynamic_id(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    sim.write_attr("/sys/bus/pci/drivers/vfio-pci/new_id", "10de 1b06")
    assert write_errno(sim, "/sys/bus/pci/drivers/vfio-pci/remove_id", "10de 1b06") == 0
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    sim.write_attr(dev(GPU, "driver_override"), "none")
    sim.write_attr(dev(GPU, "driver_override"), "\n")
    sim.write_attr("/sys/bus/pci/drivers_probe", GPU)
    assert driver_of(sim, GPU) == "nvidia"


def test_write_to_read_only_attribute_is_eacces(sim: SimHost) -> None:
    assert write_errno(sim, dev(GPU, "vendor"), "0x1234") == errno.EACCES


# -- remove, rescan, enable, hotplug -----------------------------------------------------
def test_remove_of_bridge_removes_everything_behind_it(sim: SimHost) -> None:
    sim.write_attr(dev("0000:04:10.0", "remove"), "1")
    assert not sim.exists(dev(GPU)) and not sim.exists(dev(AUDIO))
    sim.write_attr(dev("0000:03:00.0", "rescan"), "1")
    assert driver_of(sim, "0000:04:10.0") == "pcieport"
    assert driver_of(sim, AUDIO) == "snd_hda_intel"


def test_enable_of_bound_device_is_ebusy(sim: SimHost) -> None:
    assert write_errno(sim, dev(GPU, "enable"), "1") == errno.EBUSY


def test_disable_of_disabled_unbound_device_is_eio(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert write_errno(sim, dev(GPU, "enable"), "0") == errno.EIO


def test_unplugged_device_does_not_return_on_rescan_until_plugged(sim: SimHost) -> None:
    sim.kernel.unplug(GPU)
    sim.write_attr("/sys/bus/pci/rescan", "1")
    assert not sim.exists(dev(GPU))
    sim.kernel.plug(GPU)
    assert driver_of(sim, GPU) == "nvidia"


# -- IOMMU off ---------------------------------------------------------------------------
@pytest.fixture
def noiommu() -> Iterator[SimHost]:
    host = SimHost("seed-x99-noiommu", desktop=False)
    yield host
    host.close()


def test_noiommu_machine_has_no_groups_and_no_iommu_class(noiommu: SimHost) -> None:
    assert noiommu.listdir("/sys/kernel/iommu_groups") == []
    assert noiommu.listdir("/sys/class/iommu") == []
    assert noiommu.readlink(dev(GPU, "iommu_group")) is None
    assert "intel_iommu=on" not in (noiommu.read_text("/proc/cmdline") or "")


def test_noiommu_vfio_pci_probe_fails_and_bind_is_einval(noiommu: SimHost) -> None:
    noiommu.load_module("vfio-pci")
    to_vfio(noiommu, GPU)
    assert driver_of(noiommu, GPU) is None
    assert write_errno(noiommu, "/sys/bus/pci/drivers/vfio-pci/bind", GPU) == errno.EINVAL
