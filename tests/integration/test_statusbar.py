"""The waybar / polybar module (contrib/statusbar) on the real output of
``vfioctl monitor --json`` against vfiod on the simulated seed-x99."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from vfiod.sim.holder import spawn_holder

from .helpers import Vfiod, wait_for
from .test_vfioctl_monitor import monitor
from .vfioctl_helpers import vfioctl, vfioctl_argv

SCRIPT = Path(__file__).resolve().parents[2] / "contrib" / "statusbar" / "vfiod-statusbar.py"
GPU = "0000:06:00.0"


def statusbar(fmt: str, monitor_lines: list[str], seed: Path) -> list[str]:
    """The module's output lines for captured monitor lines."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--format", fmt, "--stdin",
                           "--seed", str(seed)], input="\n".join(monitor_lines) + "\n",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def capture_a_guest_session(daemon: Vfiod, tmp_path: Path) -> tuple[list[str], Path]:
    """Monitor lines while the GPU is bound, used by a guest, let go, and vfiod stops;
    and the status the module starts from."""
    seed = tmp_path / "status.json"
    status = vfioctl(daemon.address, "status", "--json")
    assert status.returncode == 0, status.stderr
    seed.write_text(status.stdout)
    with monitor(daemon, "--json") as follower:
        follower.wait_line(lambda line: '"Ready"' in line)
        assert vfioctl(daemon.address, "bind", GPU).returncode == 0
        follower.wait_line(lambda line: '"vfio"' in line and "06:00.1" in line)
        with spawn_holder(daemon.sim_root, ["/dev/vfio/31"]):
            follower.wait_line(lambda line: '"guest"' in line and "06:00.1" in line)
        held = len(follower.lines)
        follower.wait_line(lambda line: '"vfio"' in line and "06:00.1" in line
                           and line in follower.lines[held:])
        daemon.stop()
        follower.wait_line(lambda line: '"VfiodStopped"' in line)
        return list(follower.lines), seed


def test_waybar_module_follows_a_guest_session_to_vfiod_stopping(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    lines, seed = capture_a_guest_session(make_vfiod().start(), tmp_path)
    shown = [json.loads(line) for line in statusbar("waybar", lines, seed)]
    texts = [s["text"] for s in shown]
    assert texts[0] == "VFIO: all on host" and shown[0]["class"] == "host"
    assert texts.index("VFIO: 2 free") < texts.index("VFIO: 2 in guests")
    guests = shown[texts.index("VFIO: 2 in guests")]
    assert guests["class"] == "guests"
    assert "0000:06:00.0" in guests["tooltip"] and "qemu-system-x86" in guests["tooltip"]
    assert texts[-2] == "VFIO: 2 free"  # the guest let go
    assert shown[-1] == {"text": "VFIO: vfiod not running", "alt": "stopped",
                         "class": "stopped", "tooltip": "vfiod is not running"}


def test_polybar_module_colours_each_state(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    lines, seed = capture_a_guest_session(make_vfiod().start(), tmp_path)
    shown = statusbar("polybar", lines, seed)
    assert shown[0] == "%{F#2ea043}VFIO: all on host%{F-}"
    assert "%{F#1f6feb}VFIO: 2 in guests%{F-}" in shown
    assert shown[-1] == "%{F#888888}VFIO: vfiod not running%{F-}"


def test_module_running_vfioctl_itself_reads_the_status_then_follows(vfiod: Vfiod) -> None:
    command = " ".join(vfioctl_argv(vfiod.address))
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--format", "polybar",
                             "--vfioctl", command], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "%{F#2ea043}VFIO: all on host%{F-}"
        assert vfioctl(vfiod.address, "bind", GPU).returncode == 0
        seen = []
        while "VFIO: 2 free" not in (line := proc.stdout.readline()):
            assert line, f"the module ended; it printed {seen}"
            seen.append(line)
    finally:
        proc.terminate()
        proc.wait(10)
    wait_for(lambda: proc.poll() is not None, 5, "the module to stop")
