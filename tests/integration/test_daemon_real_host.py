"""vfiod on this machine's real /sys, read only: it starts, lists, and stops.

Nothing here calls Bind, Unbind or Reset, the config is empty (no device is claimed,
no release action runs) and the state directory is fresh (nothing to recover): the
daemon only reads /sys, /proc and udev events. Writes to the real host are tested in
the QEMU guest tier, never here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from vfiod.privatebus import PrivateBus, start_vfiod, stop_vfiod

SYS_PCI = Path("/sys/bus/pci/devices")


def test_real_host_mode_lists_this_machines_pci_functions(private_bus: PrivateBus,
                                                           tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    proc = start_vfiod(private_bus, None, None, tmp_path / "state", config,
                       log=tmp_path / "vfiod.log", real_host=True)
    try:
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
