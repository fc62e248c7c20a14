"""A disk below the ich9-ahci that the kernel holds is never taken, on the real kernel.

The AHCI has a raw disk (layout.AHCI_DISK_SERIAL, a sparse image in the run folder).
Each test makes the kernel claim it one way (a mount only inside another mount
namespace, swap, a dm linear device) and asks vfiod to bind the AHCI: through the
engine on RealHost("/") and, once, through the daemon over D-Bus. Every refusal is hard
(force does not override it), names the culprit, and leaves the AHCI on ahci.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.errors import InUse
from vfiod.host.real import RealHost

from .. import layout
from . import pci
from .daemon import GuestVfiod, error, manager_call, options, run

AHCI = layout.AHCI
DM_NAME = "vfiod-guard-test"


def _disk_name(host: RealHost) -> str | None:
    """The AHCI's disk (sda, or whatever the kernel called it), once it is there."""
    for name in host.listdir("/sys/class/block"):
        real = host.resolve(f"/sys/class/block/{name}") or ""
        if f"/{AHCI}/" in real and not host.exists(f"/sys/class/block/{name}/partition"):
            return name
    return None


@pytest.fixture(scope="module")
def disk(host: RealHost) -> str:
    """The disk's node. sd_mod comes by its SCSI modalias, which only udevd would load."""
    subprocess.run(["modprobe", "-q", "-a", "sd_mod", "dm_mod", "ext4"], check=True, timeout=60)
    assert pci.wait_until(lambda: _disk_name(host) is not None and
                          host.exists(f"/dev/{_disk_name(host)}"), 20), "no disk on the AHCI"
    return f"/dev/{_disk_name(host)}"


def _refusal(host: RealHost, tmp_path: Path) -> InUse:
    engine = Engine(host, tmp_path / "state", write_timeout=10.0)
    with pytest.raises(InUse) as info:
        engine.bind(AHCI, force=True)
    assert pci.driver_of(host, AHCI) == "ahci"
    return info.value


@pytest.fixture
def mounted_in_another_namespace(host: RealHost, disk: str,
                                 tmp_path: Path) -> Iterator[tuple[int, str]]:
    """The disk as ext4, mounted only inside a new mount namespace; (its pid, mount point)."""
    subprocess.run(["mkfs.ext4", "-q", "-F", disk], check=True, timeout=120)
    target = tmp_path / "ns-mnt"
    target.mkdir()
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount {disk} {target} && echo mounted && exec sleep 600"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "mounted"
        # Ours sees nothing: the old guard read only its own /proc/mounts.
        assert str(target) not in Path("/proc/self/mounts").read_text()
        yield proc.pid, str(target)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        # The namespace's mounts go when its last process does, a moment later.
        assert pci.wait_until(lambda: host.exclusive_open_errno(disk) == 0, 20), \
            f"{disk} still claimed after the namespace's process exited"


def test_a_disk_mounted_only_in_another_namespace_is_refused_naming_it(
        host: RealHost, mounted_in_another_namespace: tuple[int, str],
        tmp_path: Path) -> None:
    pid, target = mounted_in_another_namespace
    refusal = _refusal(host, tmp_path)
    assert refusal.hard
    assert f"is mounted on {target} (ext4) in the mount namespace of sleep (pid {pid})" \
        in str(refusal)


def test_the_daemon_refuses_it_over_dbus_as_in_use(
        host: RealHost, guest_vfiod: GuestVfiod,
        mounted_in_another_namespace: tuple[int, str]) -> None:
    pid, target = mounted_in_another_namespace
    reply, _ = run(manager_call(guest_vfiod.address, "Bind", "sa{sv}",
                                [AHCI, options(force=True)]))
    name, message = error(reply)
    assert name == "org.vfiod1.Error.InUse"
    assert f"mounted on {target} (ext4) in the mount namespace of sleep (pid {pid})" in message
    assert "force does not override" in message
    assert pci.driver_of(host, AHCI) == "ahci"


def test_the_disk_as_active_swap_is_refused(host: RealHost, disk: str, tmp_path: Path) -> None:
    subprocess.run(["mkswap", "-q", disk], check=True, timeout=60)
    subprocess.run(["swapon", disk], check=True, timeout=60)
    try:
        refusal = _refusal(host, tmp_path)
        assert refusal.hard
        assert f"{disk} is active swap" in str(refusal)
    finally:
        subprocess.run(["swapoff", disk], check=True, timeout=60)


def test_a_dm_linear_device_over_the_disk_is_refused(host: RealHost, disk: str,
                                                     tmp_path: Path) -> None:
    sectors = layout.AHCI_DISK_BYTES // 512
    # No udev synchronisation: dmsetup makes its own node (udevd may lack dm's rules).
    env = {**os.environ, "DM_DISABLE_UDEV": "1"}
    subprocess.run(["dmsetup", "create", "--noudevsync", DM_NAME, "--table",
                    f"0 {sectors} linear {disk} 0"], check=True, timeout=60, env=env)
    try:
        refusal = _refusal(host, tmp_path)
        assert refusal.hard
        assert f"{disk} is part of an active md/LVM/dm device (/dev/dm-" in str(refusal)
        assert f"({DM_NAME}))" in str(refusal)
    finally:
        subprocess.run(["dmsetup", "remove", "--noudevsync", DM_NAME], check=True,
                       timeout=60, env=env)


def test_the_unclaimed_disk_is_no_hard_refusal(host: RealHost, disk: str) -> None:
    # The O_EXCL probe itself: free now, and nothing it did keeps the disk open.
    assert host.exclusive_open_errno(disk) == 0
    assert host.exclusive_open_errno(disk) == 0
