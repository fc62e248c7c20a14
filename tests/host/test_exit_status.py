"""Host.exit_status: how a process ended, read while the kernel still keeps it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.host.real import RealHost


@pytest.fixture
def host(tmp_path: Path) -> RealHost:
    """The real host's reads, rooted at an empty folder: only /proc is the machine's."""
    real = RealHost(tmp_path)
    real.proc_dir = Path("/proc")
    return real


def exited(argv: list[str], sig: signal.Signals | None = None) -> Iterator[int]:
    """Start *argv*, optionally signal it, wait until its pidfd says it exited (without
    reaping it), yield its pid, reap it afterwards."""
    proc = subprocess.Popen(argv)
    fd = os.pidfd_open(proc.pid)
    try:
        if sig is not None:
            proc.send_signal(sig)
        assert select.select([fd], [], [], 10)[0], "the process did not exit"
        yield proc.pid
    finally:
        os.close(fd)
        proc.wait()


def test_a_process_killed_by_sigkill(host: RealHost) -> None:
    for pid in exited(["sleep", "30"], signal.SIGKILL):
        assert host.exit_status(pid) == signal.SIGKILL


def test_a_process_that_exited_with_status_3(host: RealHost) -> None:
    for pid in exited([sys.executable, "-c", "raise SystemExit(3)"]):
        assert host.exit_status(pid) == 3 << 8


def test_a_running_process_has_no_exit_status(host: RealHost) -> None:
    assert host.exit_status(os.getpid()) is None


def test_a_reaped_process_has_no_exit_status(host: RealHost) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert host.exit_status(proc.pid) is None
