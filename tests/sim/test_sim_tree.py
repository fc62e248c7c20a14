"""The tree looks like real sysfs, /dev and /proc, and follows the model."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from simtest import ASMEDIA, AUDIO, DESKTOP_GPU, GPU, NIC, dev, driver_of, to_vfio

from vfiod.sim import SimHost
from vfiod.sim.pci_ids_subset import SYSTEM_PCI_IDS

# The DESIGN.md table of seed-x99: address -> (ids, driver, group).
DESIGN_TABLE = {
    "0000:05:00.0": ("10de:1b06", "nvidia", 30),
    "0000:05:00.1": ("10de:10ef", "snd_hda_intel", 30),
    "0000:06:00.0": ("10de:1b06", "nvidia", 31),
    "0000:06:00.1": ("10de:10ef", "snd_hda_intel", 31),
    "0000:09:00.0": ("10de:1b06", "nvidia", 32),
    "0000:09:00.1": ("10de:10ef", "snd_hda_intel", 32),
    "0000:00:11.0": ("8086:8d7c", None, 5),
    "0000:00:11.4": ("8086:8d62", "ahci", 5),
    "0000:00:1f.0": ("8086:8d47", "lpc_ich", 12),
    "0000:00:1f.2": ("8086:8d02", "ahci", 12),
    "0000:00:1f.3": ("8086:8d22", "i801_smbus", 12),
    "0000:00:14.0": ("8086:8d31", "xhci_hcd", 6),
    "0000:11:00.0": ("1b21:1242", "xhci_hcd", 40),
    "0000:00:1b.0": ("8086:8d20", "snd_hda_intel", 9),
    "0000:00:19.0": ("8086:15a1", "e1000e", 8),
}


@pytest.mark.parametrize("address", sorted(DESIGN_TABLE))
def test_seed_x99_device_matches_design_table(sim: SimHost, address: str) -> None:
    ids, driver, group = DESIGN_TABLE[address]
    vendor, device = sim.read_text(dev(address, "vendor")), sim.read_text(dev(address, "device"))
    assert f"{vendor[2:]}:{device[2:]}" == ids  # type: ignore[index]
    assert driver_of(sim, address) == driver
    assert sim.link_name(dev(address, "iommu_group")) == str(group)


def test_gpus_sit_behind_pcieport_bridges(sim: SimHost) -> None:
    path = sim.resolve(dev(GPU)) or ""
    assert path == "/sys/devices/pci0000:00/0000:00:02.0/0000:03:00.0/0000:04:10.0/0000:06:00.0"
    for bridge in ("0000:00:02.0", "0000:03:00.0", "0000:04:10.0"):
        assert driver_of(sim, bridge) == "pcieport"
        assert sim.read_text(dev(bridge, "class")) == "0x060400"


def test_only_the_boot_gpu_has_boot_vga_1(sim: SimHost) -> None:
    assert sim.read_text(dev(DESKTOP_GPU, "boot_vga")) == "1"
    assert sim.read_text(dev(GPU, "boot_vga")) == "0"
    assert not sim.exists(dev(AUDIO, "boot_vga"))


def test_attribute_formats_are_sysfs_formats(sim: SimHost) -> None:
    assert sim.read_text(dev(GPU, "vendor")) == "0x10de"
    assert sim.read_text(dev(GPU, "class")) == "0x030000"
    assert sim.read_text(dev(GPU, "subsystem_vendor")) == "0x10de"
    assert sim.read_text(dev(GPU, "revision")) == "0xa1"
    assert sim.read_text(dev(GPU, "modalias")) == \
        "pci:v000010DEd00001B06sv000010DEsd0000120Fbc03sc00i00"
    assert "PCI_SLOT_NAME=0000:06:00.0" in (sim.read_text(dev(GPU, "uevent")) or "")


def test_config_space_holds_ids_class_and_multifunction_header(sim: SimHost) -> None:
    cfg = sim.read_bytes(dev(GPU, "config")) or b""
    assert len(cfg) == 256
    assert struct.unpack_from("<HH", cfg, 0) == (0x10DE, 0x1B06)
    assert cfg[0x0B] == 0x03 and cfg[0x0E] == 0x80  # VGA, function 0 of two
    assert (sim.read_bytes(dev(AUDIO, "config")) or b"")[0x0E] == 0x00


def test_bridge_config_space_holds_its_bus_numbers(sim: SimHost) -> None:
    cfg = sim.read_bytes(dev("0000:04:10.0", "config")) or b""
    assert cfg[0x0E] & 0x7F == 1 and tuple(cfg[0x18:0x1B]) == (0x04, 0x06, 0x06)


def test_driver_dirs_have_control_files_and_module_links(sim: SimHost) -> None:
    entries = sim.listdir("/sys/bus/pci/drivers/nvidia")
    assert {"bind", "unbind", "new_id", "remove_id", "module", GPU} <= set(entries)
    assert sim.link_name("/sys/bus/pci/drivers/xhci_hcd/module") == "xhci_pci"
    assert not sim.exists("/sys/bus/pci/drivers/pcieport/module")  # built in


def test_iommu_group_lists_its_devices(sim: SimHost) -> None:
    assert sim.listdir("/sys/kernel/iommu_groups/31/devices") == [GPU, AUDIO]
    assert sim.resolve("/sys/kernel/iommu_groups/31/devices/" + GPU) == sim.resolve(dev(GPU))
    assert sim.listdir("/sys/class/iommu") == ["dmar0"]


def test_vfio_pci_and_dev_vfio_absent_until_module_loaded(sim: SimHost) -> None:
    assert not sim.exists("/sys/module/vfio_pci")
    assert not sim.exists("/sys/bus/pci/drivers/vfio-pci")
    assert not sim.exists("/dev/vfio/vfio")
    sim.load_module("vfio-pci")
    assert sim.exists("/sys/module/vfio_pci")
    assert sim.exists("/dev/vfio/vfio")
    assert sim.link_name("/sys/bus/pci/drivers/vfio-pci/module") == "vfio_pci"


def test_device_on_vfio_pci_has_vfio_dev_and_device_node(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    (name,) = sim.listdir(dev(GPU, "vfio-dev"))
    assert sim.exists(f"/dev/vfio/devices/{name}")


def test_gpu_children_exist_on_host_driver(sim: SimHost) -> None:
    assert sim.listdir(dev(GPU, "drm")) == ["card1", "renderD129"]
    assert sim.resolve("/sys/class/drm/card1") == sim.resolve(dev(GPU, "drm/card1"))
    assert sim.exists("/dev/dri/card1") and sim.exists("/dev/nvidia1")
    info = sim.read_text(f"/proc/driver/nvidia/gpus/{GPU}/information") or ""
    assert "Device Minor: \t 1" in info


def test_children_disappear_when_device_leaves_its_driver(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert not sim.exists(dev(GPU, "drm"))
    assert not sim.exists("/sys/class/drm/card1")
    assert not sim.exists("/dev/dri/card1") and not sim.exists("/dev/nvidia1")
    assert not sim.exists(f"/proc/driver/nvidia/gpus/{GPU}")


def test_children_come_back_when_host_driver_binds_again(sim: SimHost) -> None:
    sim.write_attr(dev(AUDIO, "driver/unbind"), AUDIO)
    sim.write_attr("/sys/bus/pci/drivers_probe", AUDIO)
    assert sim.exists("/sys/class/sound/card2")
    assert sim.exists("/dev/snd/controlC2") and sim.exists("/dev/snd/pcmC2D3p")


def test_nic_has_interface_with_default_route(sim: SimHost) -> None:
    assert sim.read_text(dev(NIC, "net/eno1/operstate")) == "up"
    assert sim.resolve("/sys/class/net/eno1") == sim.resolve(dev(NIC, "net/eno1"))
    route = sim.read_text("/proc/net/route") or ""
    assert any(line.split()[:2] == ["eno1", "00000000"] for line in route.splitlines())


def test_default_route_goes_with_the_interface(sim: SimHost) -> None:
    sim.write_attr(dev(NIC, "driver/unbind"), NIC)
    assert "eno1" not in (sim.read_text("/proc/net/route") or "")
    assert not sim.exists("/sys/class/net/eno1")


def test_root_disk_partitions_are_under_the_sata_controller(sim: SimHost) -> None:
    sda2 = sim.resolve("/sys/class/block/sda2") or ""
    assert sda2.startswith(sim.resolve(dev("0000:00:1f.2")) or "-")
    assert sda2.endswith("/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda2")
    assert sim.read_text("/sys/class/block/sda2/dev") == "8:2"
    assert sim.exists("/sys/class/block/sda2/holders")
    assert sim.exists("/dev/sda2")


def test_guest_disk_sits_on_the_ssata_controller(sim: SimHost) -> None:
    assert (sim.resolve("/sys/block/sdb") or "").startswith(sim.resolve(dev("0000:00:11.4")) or "-")


def test_proc_shows_root_on_sda2_swap_on_sda3_and_iommu_cmdline(sim: SimHost) -> None:
    mounts = [line.split() for line in (sim.read_text("/proc/mounts") or "").splitlines()]
    assert ["/dev/sda2", "/", "ext4"] in [m[:3] for m in mounts]
    assert "/dev/sda3" in (sim.read_text("/proc/swaps") or "")
    assert "intel_iommu=on" in (sim.read_text("/proc/cmdline") or "").split()


def test_keyboard_hangs_below_the_usb_controller(sim: SimHost) -> None:
    target = sim.resolve("/sys/class/input/input3") or ""
    controller = sim.resolve(dev("0000:00:14.0")) or "-"
    assert target == controller + "/usb1/1-2/1-2:1.0/0003:046D:C31C.0001/input/input3"


def test_vtconsole_bind_is_writable(sim: SimHost) -> None:
    assert sim.read_text("/sys/class/vtconsole/vtcon1/name") == "(M) frame buffer device"
    sim.write_attr("/sys/class/vtconsole/vtcon1/bind", "0")
    assert sim.read_text("/sys/class/vtconsole/vtcon1/bind") == "0"


@pytest.mark.skipif(not SYSTEM_PCI_IDS.is_file(), reason="no system pci.ids")
def test_pci_ids_subset_copies_the_system_names(sim: SimHost) -> None:
    system = set(SYSTEM_PCI_IDS.read_text(errors="replace").splitlines())
    ours = [line for line in (sim.read_text("/usr/share/misc/pci.ids") or "").splitlines()
            if line and not line.startswith("#")]
    assert "\t1b06  GP102 [GeForce GTX 1080 Ti]" in ours
    assert "C 03  Display controller" in ours
    assert set(ours) <= system


def test_shipped_pci_ids_is_the_extract_of_the_same_pci_ids_version() -> None:
    from vfiod.sim.pci_ids_subset import SHIPPED_PCI_IDS, subset
    from vfiod.sim.profiles import PROFILES

    if not SYSTEM_PCI_IDS.is_file():
        pytest.skip("no system pci.ids")
    system = SYSTEM_PCI_IDS.read_text(errors="replace")
    shipped = SHIPPED_PCI_IDS.read_text()
    version = next(line for line in shipped.splitlines() if line.startswith("#\tVersion:"))
    if version not in system.splitlines():
        pytest.skip("the system pci.ids is another version than the shipped extract's")
    devices = [d for p in PROFILES.values() for d in p.devices]
    assert shipped == subset(system, devices, str(SYSTEM_PCI_IDS))


def test_every_node_sits_in_a_directory_the_model_made(sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    root = Path(sim.root)
    for top in ("sys", "dev", "proc"):
        for dirpath, dirnames, filenames in os.walk(root / top):
            host_dir = "/" + os.path.relpath(dirpath, root)
            for name in dirnames + filenames:
                assert sim.kernel.tree.node(f"{host_dir}/{name}") is not None, name


def test_links_never_dangle(sim: SimHost) -> None:
    for dirpath, dirnames, filenames in os.walk(Path(sim.root) / "sys"):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                assert os.path.exists(path), path


def test_asmedia_controller_is_alone_behind_a_chipset_root_port(sim: SimHost) -> None:
    assert (sim.resolve(dev(ASMEDIA)) or "").endswith("/0000:00:1c.4/0000:11:00.0")
