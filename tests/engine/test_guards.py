"""Guards refuse to take a device the host needs, and name the culprit."""

from __future__ import annotations

import pytest

from vfiod.engine import Engine
from vfiod.errors import GroupNotViable, InUse
from vfiod.sim import SimHost

from .placement import driver_of


def test_root_filesystem_controller_is_refused(engine: Engine, host: SimHost) -> None:
    with pytest.raises(InUse, match=r"mounted on / ") as info:
        engine.bind("0000:00:1f.2")
    assert info.value.hard
    assert driver_of(host, "0000:00:1f.2") == "ahci"


def test_root_filesystem_controller_is_refused_even_with_force(engine: Engine,
                                                               host: SimHost) -> None:
    with pytest.raises(InUse, match="force does not override"):
        engine.bind("0000:00:1f.2", force=True)
    assert driver_of(host, "0000:00:1f.2") == "ahci"


def test_group_mate_of_the_root_disk_controller_is_refused(engine: Engine) -> None:
    # 00:1f.3 (SMBus) shares group 12 with the SATA controller of the root filesystem.
    with pytest.raises(InUse, match="0000:00:1f.2"):
        engine.bind("0000:00:1f.3", force=True)


def test_desktop_gpu_is_refused_naming_xorg_and_its_pid(engine: Engine, host: SimHost) -> None:
    holders = host.holders(["/dev/dri/card0"])["/dev/dri/card0"]
    xorg = next(p for p in holders if p.comm == "Xorg")
    with pytest.raises(InUse, match=rf"Xorg \(pid {xorg.pid}\)") as info:
        engine.bind("0000:05:00.0")
    assert not info.value.hard
    assert driver_of(host, "0000:05:00.0") == "nvidia"


def test_desktop_gpu_binds_with_force(engine: Engine, host: SimHost) -> None:
    assert engine.bind("0000:05:00.0", force=True) == ["0000:05:00.0", "0000:05:00.1"]
    assert driver_of(host, "0000:05:00.0") == "vfio-pci"


def test_nic_with_the_default_route_is_refused(engine: Engine) -> None:
    with pytest.raises(InUse, match="eno1 is up and carries the default route"):
        engine.bind("0000:00:19.0")


def test_usb_controller_with_the_keyboard_is_refused(engine: Engine) -> None:
    with pytest.raises(InUse, match="input devices are attached"):
        engine.bind("0000:00:14.0")


def test_guest_usb_controller_binds(engine: Engine, host: SimHost) -> None:
    assert engine.bind("0000:11:00.0") == ["0000:11:00.0"]


def test_unbind_refused_while_a_guest_holds_the_group(engine: Engine, host: SimHost) -> None:
    engine.bind("0000:06:00.0")
    with host.spawn_holder(["/dev/vfio/31"], comm="qemu-system-x86") as guest:
        with pytest.raises(InUse, match=rf"qemu-system-x86 \(pid {guest.pid}\)"):
            engine.unbind("0000:06:00.0")
        assert driver_of(host, "0000:06:00.0") == "vfio-pci"
    assert engine.unbind("0000:06:00.0") == ["0000:06:00.0", "0000:06:00.1"]


def test_no_iommu_group_is_refused_with_how_to_turn_it_on(tmp_path) -> None:
    sim = SimHost(profile="seed-x99-noiommu")
    try:
        engine = Engine(sim, tmp_path / "state")
        with pytest.raises(GroupNotViable, match="intel_iommu=on"):
            engine.bind("0000:06:00.0")
        assert not engine.iommu_enabled
    finally:
        sim.close()


def _give_the_guest_disk_to_the_host(host: SimHost, how: str) -> None:
    """Make the host use sdb (on the sSATA controller 00:11.4) the way *how* says."""
    if how == "swap":
        host.storage.swapon("sdb1")
    elif how == "md":
        host.storage.md_create("sdb1")
    elif how == "mount":
        host.storage.mount("sdb1", "/srv/vm")


def test_disk_controller_with_active_swap_is_refused_even_with_force(engine: Engine,
                                                                     host: SimHost) -> None:
    _give_the_guest_disk_to_the_host(host, "swap")
    with pytest.raises(InUse, match="/dev/sdb1 is active swap") as info:
        engine.bind("0000:00:11.4", force=True)
    assert info.value.hard
    assert driver_of(host, "0000:00:11.4") == "ahci"


def test_disk_controller_under_an_md_array_is_refused_even_with_force(engine: Engine,
                                                                      host: SimHost) -> None:
    _give_the_guest_disk_to_the_host(host, "md")
    with pytest.raises(InUse, match=r"/dev/sdb1 is part of an active md/LVM/dm device \(/dev/md0\)"):
        engine.bind("0000:00:11.4", force=True)


def test_group_mate_with_a_mounted_filesystem_blocks_its_whole_group(engine: Engine,
                                                                    host: SimHost) -> None:
    _give_the_guest_disk_to_the_host(host, "mount")
    with pytest.raises(InUse, match="0000:00:11.4: .*/dev/sdb1 is mounted on /srv/vm"):
        engine.bind("0000:00:11.0", force=True)  # the SPSR function moves with 00:11.4
    assert driver_of(host, "0000:00:11.0") is None
