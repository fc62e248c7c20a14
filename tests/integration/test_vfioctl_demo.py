"""``make demo`` (python -m vfiod.demo) runs end to end and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains *text* (read from the real /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry))
    return found


@pytest.fixture
def demo_tmp() -> Iterator[Path]:
    """An empty TMPDIR for the demo; short, because the bus socket lives in it and a
    unix socket path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_demo(tmp: Path) -> subprocess.Popen[str]:
    """Start the demo with its temporary files under *tmp*."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "vfiod.demo"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_demo_shows_every_step_and_succeeds(demo_tmp: Path) -> None:
    proc = run_demo(demo_tmp)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    commands = [line for line in out.splitlines() if line.startswith("$ ")]
    assert commands == ["$ vfioctl status", "$ vfioctl bind 06:00.0", "$ vfioctl status",
                        "$ vfioctl bind 00:1f.2", "$ vfioctl unbind 06:00.0",
                        "$ vfioctl status 06:00.0"]
    assert "nvidia -> vfio-pci" in out and "vfio-pci -> nvidia" in out
    assert "vfioctl: 0000:00:1f.2: " in out and "[exit status 4]" in out
    assert "Traceback" not in out + err
    assert out.rstrip().endswith("demo: every step did what it shows")
    assert list(demo_tmp.iterdir()) == []
    assert processes_mentioning(str(demo_tmp)) == []


def test_demo_interrupted_cleans_up_daemon_bus_and_files(demo_tmp: Path) -> None:
    proc = run_demo(demo_tmp)
    assert proc.stdout is not None
    # Wait until vfiod runs and the first command is shown, then press Ctrl-C.
    for line in proc.stdout:
        if line.startswith("$ vfioctl"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 10
    while processes_mentioning(str(demo_tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(demo_tmp)) == []
    assert list(demo_tmp.iterdir()) == []
