"""The tree is the machine's state: a new SimHost on the same root finds it as left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from simtest import GPU, dev, driver_of, to_vfio, wait_for

from vfiod.errors import HostWriteTimeout
from vfiod.sim import SimHost, SimRootBusy, reboot, spawn_holder
from vfiod.sim.host import scratch_dir
from vfiod.sim.machine_state import STATE_FILE


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory for a machine that outlives its SimHost (in tmpfs: fast to build)."""
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as scratch:
        yield Path(scratch) / "machine"


def test_reattach_finds_bindings_and_overrides_as_left(root: Path) -> None:
    with SimHost(root=root, desktop=False) as first:
        first.load_module("vfio-pci")
        to_vfio(first, GPU)
        first.write_attr(dev("0000:09:00.0", "driver_override"), "none")
    with SimHost(root=root, desktop=False) as second:
        assert second.reattached
        assert driver_of(second, GPU) == "vfio-pci"
        assert second.module_loaded("vfio_pci")
        assert second.read_text(dev("0000:09:00.0", "driver_override")) == "none"
        assert second.exists("/dev/vfio/31")


def test_reattached_machine_keeps_working(root: Path) -> None:
    with SimHost(root=root, desktop=False) as first:
        first.load_module("vfio-pci")
        to_vfio(first, GPU)
    with SimHost(root=root, desktop=False) as second:
        second.write_attr(dev(GPU, "driver_override"), "\n")
        second.write_attr(dev(GPU, "driver/unbind"), GPU)
        second.write_attr("/sys/bus/pci/drivers_probe", GPU)
        assert driver_of(second, GPU) == "nvidia"
        assert second.exists("/dev/dri/card1")


def test_state_file_is_small_when_little_changed(root: Path) -> None:
    with SimHost(root=root, desktop=False) as host:
        host.write_attr(dev(GPU, "driver_override"), "vfio-pci")
        saved = json.loads((root / STATE_FILE).read_text())
    assert saved["devices"] == {GPU: {"override": "vfio-pci"}}


def test_reattach_after_sigkill_finds_state_the_killed_process_left(root: Path) -> None:
    script = f"""
import os, sys, time
from vfiod.sim import SimHost
sim = SimHost(root=sys.argv[1])
sim.load_module("vfio-pci")
sim.write_attr("{dev(GPU, 'driver_override')}", "vfio-pci")
sim.write_attr("{dev(GPU, 'driver/unbind')}", "{GPU}")
print("ready", flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with SimHost(root=root) as again:
        assert driver_of(again, GPU) is None  # unbound, as the killed process left it
        assert again.read_text(dev(GPU, "driver_override")) == "vfio-pci"
        again.write_attr("/sys/bus/pci/drivers_probe", GPU)
        assert driver_of(again, GPU) == "vfio-pci"


def test_unbind_left_waiting_for_a_holder_completes_after_reattach(root: Path) -> None:
    first = SimHost(root=root, desktop=False)
    first.load_module("vfio-pci")
    to_vfio(first, GPU)
    guest = spawn_holder(root, ["/dev/vfio/31"], device_fds=[GPU])  # outlives `first`
    try:
        with pytest.raises(HostWriteTimeout):
            first.write_attr("/sys/bus/pci/drivers/vfio-pci/unbind", GPU, timeout=0.2)
        first.close()
        with SimHost(root=root, desktop=False) as second:
            assert driver_of(second, GPU) is None
            assert second.exists("/dev/vfio/31")
            guest.close()
            assert wait_for(lambda: not second.exists("/dev/vfio/31"), 3.0)
            assert not second.kernel.states[GPU].releasing
    finally:
        guest.close()


def test_half_written_tree_is_repaired_on_reattach(root: Path) -> None:
    with SimHost(root=root, desktop=False):
        pass
    stray = root / "sys/bus/pci/drivers/nvidia/0000:42:00.0"
    os.symlink("../../../../devices/pci0000:00/0000:42:00.0", stray)
    (root / "sys/bus/pci/devices" / GPU / "vendor").write_text("0xffff\n")
    with SimHost(root=root, desktop=False) as again:
        assert not os.path.lexists(stray)
        assert again.read_text(dev(GPU, "vendor")) == "0x10de"


def test_second_simhost_on_a_live_root_is_refused(root: Path) -> None:
    with SimHost(root=root, desktop=False):
        with pytest.raises(SimRootBusy):
            SimHost(root=root, desktop=False)


def test_reattach_with_another_profile_is_refused(root: Path) -> None:
    with SimHost(root=root, desktop=False):
        pass
    with pytest.raises(ValueError):
        SimHost("seed-x99-noiommu", root=root, desktop=False)


def test_building_into_a_non_empty_directory_is_refused_and_touches_nothing(
        tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sys").mkdir()
    with pytest.raises(ValueError):
        SimHost(root=tmp_path, desktop=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "sys"]


def test_temporary_root_is_removed_on_close() -> None:
    host = SimHost(desktop=False)
    root = host.root
    host.close()
    assert not root.exists()


def test_given_root_is_kept_on_close(root: Path) -> None:
    with SimHost(root=root, desktop=False):
        pass
    assert (root / STATE_FILE).exists() and (root / "sys/bus/pci/devices").is_dir()


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError):
        SimHost("seed-z390")


def test_temporary_machine_of_a_killed_process_is_swept_by_the_next_one() -> None:
    script = "from vfiod.sim import SimHost; import os; h = SimHost(desktop=False); " \
             "print(h.root, flush=True); os.kill(os.getpid(), 9)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30)
    left = Path(out.stdout.strip())
    assert left.is_dir()
    old = time.time() - 3600
    os.utime(left, (old, old))
    with SimHost(desktop=False) as live:
        assert not left.exists()
        assert live.root.exists()


def test_the_boot_id_is_stable_on_reattach_and_new_after_a_reboot(root: Path) -> None:
    with SimHost(root=root, desktop=False) as first:
        boot = first.read_text("/proc/sys/kernel/random/boot_id")
        first.load_module("vfio-pci")
    assert boot is not None and len(boot) == 36
    with SimHost(root=root, desktop=False) as second:
        assert second.boot_id() == boot
    reboot(root)
    with SimHost(root=root, desktop=False) as rebooted:
        assert not rebooted.reattached
        assert rebooted.boot_id() not in (None, boot)
        assert not rebooted.module_loaded("vfio_pci")  # what the kernel held is gone


def test_a_machine_in_use_cannot_be_rebooted(root: Path) -> None:
    with SimHost(root=root, desktop=False):
        with pytest.raises(SimRootBusy):
            reboot(root)
