"""A disk the kernel holds is never taken, whoever holds it, and the refusal names them.

The simulated kernel answers open(O_EXCL) from what claims each block device (a mount in
any namespace, swap, dm/md, btrfs); the guards name the culprit from every namespace's
mountinfo, by device number. Bind of the sSATA controller 00:11.4 (disk sdb, partition
sdb1) or of the SATA controller 00:1f.2 (sda: /boot/efi, /, swap) in seed-x99.
"""

from __future__ import annotations

import dataclasses
import errno
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.errors import InUse
from vfiod.sim import PROFILES, SimHost
from vfiod.sim.spec import Children, Disk

from .placement import driver_of

GUEST_DISK_CONTROLLER = "0000:00:11.4"


def _refusal(engine: Engine, address: str = GUEST_DISK_CONTROLLER) -> InUse:
    with pytest.raises(InUse) as info:
        engine.bind(address, force=True)
    return info.value


def test_root_shown_as_dev_root_is_refused_by_its_device_number(engine: Engine,
                                                                host: SimHost) -> None:
    # A boot without an initramfs: the mount table names the root device /dev/root.
    host.storage.unmount("/")
    host.storage.mount("sda2", "/", source="/dev/root")
    assert "/dev/root / ext4" in (host.read_text("/proc/mounts") or "")
    refusal = _refusal(engine, "0000:00:1f.2")
    assert refusal.hard
    assert re.search(r"/dev/sda2 is mounted on / \(ext4\)", str(refusal))
    assert driver_of(host, "0000:00:1f.2") == "ahci"


def test_lvm_on_luks_is_refused_naming_the_volume_and_its_mount(engine: Engine,
                                                                host: SimHost) -> None:
    crypt = host.storage.dm_create("luks-2f1d", "sdb1")
    volume = host.storage.dm_create("vg0-home", crypt)
    host.storage.mount(volume, "/home")
    refusal = _refusal(engine)
    assert refusal.hard
    assert "/dev/dm-1 (vg0-home) (on /dev/dm-0 (luks-2f1d)) is mounted on /home (ext4)" \
        in str(refusal)
    assert "/dev/sdb1 is part of an active md/LVM/dm device (/dev/dm-0 (luks-2f1d))" \
        in str(refusal)
    assert driver_of(host, GUEST_DISK_CONTROLLER) == "ahci"


@pytest.fixture
def two_disk_host() -> Iterator[SimHost]:
    """seed-x99 with a second disk, sdc, on the sSATA controller."""
    base = PROFILES["seed-x99"]
    devices = tuple(
        dataclasses.replace(d, children=Children(disks=(
            Disk("sdb", 16, 1, port=7, scsi_host=6), Disk("sdc", 32, 0, port=8, scsi_host=7))))
        if d.address == GUEST_DISK_CONTROLLER else d for d in base.devices)
    sim = SimHost(dataclasses.replace(base, devices=devices))
    try:
        yield sim
    finally:
        sim.close()


def test_btrfs_over_two_disks_is_refused_for_the_member_the_mount_does_not_name(
        two_disk_host: SimHost, tmp_path: Path) -> None:
    host = two_disk_host
    engine = Engine(host, tmp_path / "state", write_timeout=5.0)
    # Mounted through sdc: sdb1 is a member the mount table never mentions.
    host.storage.mkfs_btrfs_and_mount(("sdc", "sdb1"), "/data")
    refusal = _refusal(engine)
    assert refusal.hard
    assert "/dev/sdb1 is mounted on /data (btrfs)" in str(refusal)
    assert "/dev/sdc is mounted on /data (btrfs)" in str(refusal)


def test_loop_device_backed_by_a_file_on_the_disk_is_refused(engine: Engine,
                                                             host: SimHost) -> None:
    host.storage.mount("sdb1", "/srv/images")
    loop = host.storage.losetup("/srv/images/win10.iso")
    host.storage.mount(loop, "/mnt/iso", "iso9660")
    refusal = str(_refusal(engine))
    assert "/dev/loop0 (backed by /srv/images/win10.iso on /dev/sdb1) is mounted on " \
           "/mnt/iso (iso9660)" in refusal
    assert "/dev/sdb1 is mounted on /srv/images (ext4)" in refusal


def test_mount_only_in_another_namespace_is_refused_naming_its_process(
        engine: Engine, host: SimHost) -> None:
    pid = host.storage.new_namespace("unshare")
    host.storage.mount("sdb1", "/mnt", pid=pid)
    assert "sdb1" not in (host.read_text("/proc/mounts") or "")  # not in our namespace
    refusal = _refusal(engine)
    assert refusal.hard
    assert f"/dev/sdb1 is mounted on /mnt (ext4) in the mount namespace of unshare (pid {pid})" \
        in str(refusal)
    assert driver_of(host, GUEST_DISK_CONTROLLER) == "ahci"


def test_mount_in_a_namespace_whose_mountinfo_is_unreadable_is_refused_saying_so(
        engine: Engine, host: SimHost) -> None:
    pid = host.storage.new_namespace("bwrap", readable=False)
    host.storage.mount("sdb1", "/run/host", pid=pid)
    refusal = _refusal(engine)
    assert refusal.hard
    assert "/dev/sdb1: the kernel says it is claimed" in str(refusal)
    assert f"could not read /proc/{pid}/mountinfo (bwrap (pid {pid})'s mount namespace)" \
        in str(refusal)


def test_unreadable_proc_mounts_does_not_read_as_nothing_mounted(engine: Engine,
                                                                 host: SimHost) -> None:
    for name in ("proc/mounts", "proc/1/mountinfo"):
        (host.root / name).unlink()
    refusal = _refusal(engine, "0000:00:1f.2")
    assert refusal.hard
    assert "/dev/sda2: the kernel says it is claimed" in str(refusal)
    assert "could not read /proc/self/mountinfo (vfiod's own mount namespace)" in str(refusal)


def test_active_swap_is_refused(engine: Engine, host: SimHost) -> None:
    host.storage.swapon("sdb1")
    refusal = _refusal(engine)
    assert refusal.hard
    assert "/dev/sdb1 is active swap" in str(refusal)


def test_a_device_that_cannot_be_checked_is_refused_saying_why(engine: Engine,
                                                              host: SimHost) -> None:
    host.storage.open_errors["sdb"] = errno.EACCES
    refusal = _refusal(engine)
    assert refusal.hard
    assert "could not check whether the kernel holds /dev/sdb: open(O_EXCL) failed: " \
           "Permission denied" in str(refusal)


def test_process_holding_the_disk_open_is_a_soft_guard_naming_it(engine: Engine,
                                                                 host: SimHost) -> None:
    with host.spawn_holder(["/dev/sdb"], comm="dd") as dd:
        with pytest.raises(InUse, match=rf"/dev/sdb is held open by dd \(pid {dd.pid}\)") \
                as info:
            engine.bind(GUEST_DISK_CONTROLLER)
        assert not info.value.hard
        assert driver_of(host, GUEST_DISK_CONTROLLER) == "ahci"
        assert GUEST_DISK_CONTROLLER in engine.bind(GUEST_DISK_CONTROLLER, force=True)


def test_an_unclaimed_disk_binds(engine: Engine, host: SimHost) -> None:
    assert host.exclusive_open_errno("/dev/sdb1") == 0
    assert GUEST_DISK_CONTROLLER in engine.bind(GUEST_DISK_CONTROLLER)
    assert host.exclusive_open_errno("/dev/sdb1") == errno.ENOENT  # gone with ahci


def test_a_claimed_partition_leaves_its_whole_disk_openable(host: SimHost) -> None:
    # block/bdev.c bd_may_claim: why every partition is opened, not only the disk.
    host.storage.mount("sdb1", "/srv/vm")
    assert host.exclusive_open_errno("/dev/sdb1") == errno.EBUSY
    assert host.exclusive_open_errno("/dev/sdb") == 0


def test_a_mount_another_namespace_copied_from_ours_is_named_once(engine: Engine,
                                                                  host: SimHost) -> None:
    host.storage.mount("sdb1", "/srv/vm")
    pid = host.storage.new_namespace("unshare")
    host.storage.mount("sdb1", "/srv/vm", pid=pid)  # the copy unshare -m made
    refusal = str(_refusal(engine))
    assert refusal.count("/srv/vm") == 1
    assert "in the mount namespace of" not in refusal


def test_the_root_filesystem_is_named_first(engine: Engine, host: SimHost) -> None:
    # sda1 (/boot/efi), sda2 (/) and sda3 (swap): the refusal leads with what matters most.
    refusal = str(_refusal(engine, "0000:00:1f.2"))
    reasons = refusal.split("refusing to bind it to vfio-pci: ", 1)[1]
    assert reasons.startswith("/dev/sda2 is mounted on / (ext4); "
                              "/dev/sda1 is mounted on /boot/efi (vfat); /dev/sda3 is active swap")


def test_status_names_the_root_disk_without_claiming_any_disk(
        host: SimHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Describing the machine must not take a disk for a moment (a mount running then
    # would fail EBUSY): only the guard before a detach asks with an exclusive open.
    probed: list[str] = []
    monkeypatch.setattr(host, "exclusive_open_errno",
                        lambda node: probed.append(node) or 0)
    engine = Engine(host, tmp_path / "state")
    used_by = engine.device_status("0000:00:1f.2").used_by
    assert "mounted on / (ext4)" in used_by
    assert probed == []
