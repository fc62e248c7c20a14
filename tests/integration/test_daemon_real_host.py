"""vfiod on this machine's real /sys, read only: it starts, lists, and stops.

Nothing here calls Bind, Unbind or Reset, the config is empty (no device is claimed,
no release action runs) and the state directory is fresh (nothing to recover): the
daemon only reads /sys, /proc and udev events. Writes to the real host are tested in
the QEMU guest tier, never here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vfiod.privatebus import PrivateBus, name_owner_pid, stop_vfiod

from .helpers import wait_for

SYS_PCI = Path("/sys/bus/pci/devices")


def test_real_host_mode_lists_this_machines_pci_functions(private_bus: PrivateBus,
                                                           tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    env = private_bus.env()
    env.pop("NOTIFY_SOCKET", None)
    with open(tmp_path / "vfiod.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vfiod.daemon.main", "--config", str(config),
             "--state-dir", str(tmp_path / "state")],  # the system bus: ours, via env
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: name_owner_pid(private_bus.address) == proc.pid
                 or proc.poll() is not None,
                 30, "vfiod on the real host")
        assert proc.poll() is None, (tmp_path / "vfiod.log").read_text()
        status = subprocess.run(
            ["busctl", f"--address={private_bus.address}", "call", "org.vfiod1",
             "/org/vfiod1", "org.vfiod1.Manager", "Status"],
            capture_output=True, text=True, check=True).stdout
        for address in os.listdir(SYS_PCI):
            assert f'"{address}"' in status
        simulated = subprocess.run(
            ["busctl", f"--address={private_bus.address}", "get-property", "org.vfiod1",
             "/org/vfiod1", "org.vfiod1.Manager", "Simulated"],
            capture_output=True, text=True, check=True).stdout
        assert simulated.strip() == "b false"
    finally:
        assert stop_vfiod(proc) == 0
    assert not list((tmp_path / "state").glob("txn-*.json"))
