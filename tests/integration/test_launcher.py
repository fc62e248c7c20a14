"""The knobs reach the simulated host through the test launcher only, never vfiod itself."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from vfiod.privatebus import PrivateBus, start_vfiod, vfiod_command

from .helpers import LAUNCHER, Vfiod, knobs, sim_driver

GPU = "0000:06:00.0"


def test_vfiod_itself_ignores_the_knobs(private_bus: PrivateBus,
                                        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod()  # stopped by the fixture
    # vfiod's own main (not the launcher), given knobs that would kill it at the first write.
    daemon.proc = start_vfiod(private_bus, daemon.sim_root, "seed-x99", daemon.state_dir,
                              daemon.config, knobs(crash_before=0), log=daemon.log_path)
    result = daemon.call("Bind", "sa{sv}", GPU, "0")
    assert result.returncode == 0, result.stderr
    assert sim_driver(daemon.sim_root, GPU) == "vfio-pci"


def test_a_malformed_knob_stops_the_launcher_with_one_line(private_bus: PrivateBus,
                                                          tmp_path: Path) -> None:
    command = vfiod_command(private_bus, tmp_path / "sim", "seed-x99", tmp_path / "state",
                            program=LAUNCHER)
    result = subprocess.run(command, env={**private_bus.env(),
                                          **knobs(crash_soon=1)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("launcher: VFIOD_SIM_TEST_KNOBS is not valid")
    assert "Traceback" not in result.stderr
