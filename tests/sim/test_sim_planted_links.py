"""The simulated host, run as root, never follows what another user planted (issue 11.9).

Each test plants what an unprivileged user (uid 65534) could: a symbolic link where the
simulated host creates, truncates or sweeps, or a directory of its own among the
simulated host's. The victim file must keep its contents, the other user's directory
must stay.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from simtest import GPU, dev

from vfiod.sim import SimHost, reboot
from vfiod.sim.host import LOCK_FILE, TEMP_ROOT_PREFIX, scratch_dir, sweep_orphans
from vfiod.sim.holder import GROUP_LOCK_DIR
from vfiod.sim.safefs import UnsafeSimPath
from vfiod.sim.watcher import SYNC_DIR

NOBODY = 65534
VICTIM_TEXT = "root:x:0:0:precious\n"


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory for a machine, in tmpfs (fast to build)."""
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as scratch:
        yield Path(scratch) / "machine"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file the attacker wants truncated (as /etc/shadow would be)."""
    path = tmp_path / "victim"
    path.write_text(VICTIM_TEXT)
    return path


def _age(path: Path) -> None:
    old = time.time() - 3600
    os.utime(path, (old, old), follow_symlinks=False)


def test_a_planted_lock_link_is_refused_and_its_target_kept(root: Path, victim: Path) -> None:
    root.mkdir()
    os.symlink(victim, root / LOCK_FILE)
    with pytest.raises(UnsafeSimPath, match="symbolic link"):
        SimHost(root=root, desktop=False)
    assert victim.read_text() == VICTIM_TEXT


def test_a_lock_file_of_another_user_is_refused(root: Path) -> None:
    root.mkdir()
    (root / LOCK_FILE).write_text("")
    os.chown(root / LOCK_FILE, NOBODY, NOBODY)
    with pytest.raises(UnsafeSimPath, match="owned by uid 65534"):
        SimHost(root=root, desktop=False)


def test_a_root_directory_others_can_write_is_refused(root: Path) -> None:
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(UnsafeSimPath, match="writable by others"):
        SimHost(root=root, desktop=False)
    assert not (root / LOCK_FILE).exists()


def test_a_root_directory_of_another_user_is_refused(root: Path) -> None:
    root.mkdir()
    os.chown(root, NOBODY, NOBODY)
    with pytest.raises(UnsafeSimPath, match="owned by uid 65534"):
        SimHost(root=root, desktop=False)


def test_reboot_refuses_a_planted_lock_link(root: Path, victim: Path) -> None:
    root.mkdir()
    os.symlink(victim, root / LOCK_FILE)
    with pytest.raises(UnsafeSimPath):
        reboot(root)
    assert victim.read_text() == VICTIM_TEXT


def test_rewrites_never_use_a_guessable_temporary_name(root: Path, victim: Path) -> None:
    with SimHost(root=root, desktop=False) as host:
        directory = Path(host.kernel.tree.real(dev(GPU, "driver_override"))).parent
        # What the rewrite used to create, with O_TRUNC and links followed.
        os.symlink(victim, directory / f".sim-tmp-driver_override.{os.getpid()}")
        host.write_attr(dev(GPU, "driver_override"), "vfio-pci")
        assert host.read_text(dev(GPU, "driver_override")) == "vfio-pci"
    assert victim.read_text() == VICTIM_TEXT


def test_a_planted_group_lock_directory_is_refused(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with SimHost(root=root, desktop=False) as host:
        host.load_module("vfio-pci")
        host.write_attr(dev(GPU, "driver_override"), "vfio-pci")
        host.write_attr(dev(GPU, "driver/unbind"), GPU)
        host.write_attr("/sys/bus/pci/drivers_probe", GPU)
        os.symlink(elsewhere, root / GROUP_LOCK_DIR)
        with pytest.raises(OSError):
            host.open_group(31)
    assert list(elsewhere.iterdir()) == []


def test_a_planted_sync_marker_link_is_refused(root: Path, victim: Path) -> None:
    with SimHost(root=root, desktop=False) as host:
        os.symlink(victim, root / SYNC_DIR / "marker")
        with pytest.raises(UnsafeSimPath):
            host.sync_external(timeout=0.5)
    assert victim.read_text() == VICTIM_TEXT


def test_the_sweep_leaves_another_users_directory(tmp_path: Path) -> None:
    theirs = tmp_path / f"{TEMP_ROOT_PREFIX}theirs"
    theirs.mkdir()
    (theirs / "work").write_text("not yours")
    os.chown(theirs, NOBODY, NOBODY)
    _age(theirs)
    sweep_orphans(str(tmp_path))
    assert (theirs / "work").read_text() == "not yours"


def test_the_sweep_removes_its_own_orphan(tmp_path: Path) -> None:
    mine = tmp_path / f"{TEMP_ROOT_PREFIX}mine"
    mine.mkdir(mode=0o700)
    (mine / LOCK_FILE).write_text("")
    _age(mine)
    sweep_orphans(str(tmp_path))
    assert not mine.exists()


def test_the_sweep_follows_no_planted_link(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / f"{TEMP_ROOT_PREFIX}link"
    os.symlink(victim.parent, link)
    _age(link)
    lock_link = tmp_path / f"{TEMP_ROOT_PREFIX}locklink"
    lock_link.mkdir(mode=0o700)
    os.symlink(victim, lock_link / LOCK_FILE)
    _age(lock_link)
    sweep_orphans(str(tmp_path))
    assert victim.read_text() == VICTIM_TEXT
    assert link.is_symlink() and lock_link.is_dir()


def test_vfiod_with_a_planted_lock_link_in_its_sim_root_refuses_to_start(
        root: Path, victim: Path, tmp_path: Path) -> None:
    root.mkdir()
    os.symlink(victim, root / LOCK_FILE)
    result = subprocess.run(
        [sys.executable, "-m", "vfiod.daemon.main", "--simulate", "seed-x99",
         "--sim-root", str(root), "--state-dir", str(tmp_path / "state"),
         "--config", str(tmp_path / "absent.toml"),
         "--address", f"unix:path={tmp_path}/no-bus-here"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert victim.read_text() == VICTIM_TEXT


def test_a_root_directory_writable_only_by_its_users_own_group_is_used(root: Path) -> None:
    # umask 002 with a user private group makes directories 0775.
    root.mkdir()
    root.chmod(0o775)
    with SimHost(root=root, desktop=False) as host:
        assert host.exists("/sys/bus/pci/devices/0000:06:00.0")


def test_a_root_directory_another_group_can_write_is_refused(root: Path) -> None:
    root.mkdir()
    os.chown(root, os.geteuid(), NOBODY)
    root.chmod(0o775)
    with pytest.raises(UnsafeSimPath, match="writable by others"):
        SimHost(root=root, desktop=False)
