"""The harness's service-manager side: the NOTIFY_SOCKET start_vfiod gives a daemon."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import vfiod
from vfiod.privatebus import Notifications, PrivateBus, same_vfiod_env, start_vfiod

SEND = ("import os, socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
        "[s.sendto(m.encode(), os.environ['NOTIFY_SOCKET']) for m in sys.argv[1:]]")


def child(notes: Notifications, *messages: str) -> subprocess.Popen[bytes]:
    """A process that sends *messages* to *notes* and exits."""
    return subprocess.Popen([sys.executable, "-c", SEND, *messages],
                            env={**os.environ, "NOTIFY_SOCKET": notes.path})


def test_every_notification_of_the_followed_process_is_kept_in_order() -> None:
    notes = Notifications()
    proc = child(notes, "STATUS=starting", "READY=1\nSTATUS=up")
    notes.follow(proc.pid)
    assert notes.ready(timeout=10)
    assert proc.wait(10) == 0
    notes.join()
    assert [n.text for n in notes.received] == ["STATUS=starting", "READY=1\nSTATUS=up"]
    assert notes.received[1].lines == ["READY=1", "STATUS=up"]


def test_notifications_from_another_process_are_ignored() -> None:
    notes = Notifications()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    notes.follow(proc.pid)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.sendto(b"READY=1", notes.path)
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(10)
    notes.join()
    assert notes.received == []


def test_ready_is_false_once_the_process_exits_without_it() -> None:
    notes = Notifications()
    proc = child(notes, "STATUS=giving up")
    notes.follow(proc.pid)
    assert notes.ready(timeout=10) is False
    assert notes.ended
    proc.wait(10)


def test_the_socket_and_its_dir_go_when_the_process_has_exited() -> None:
    notes = Notifications()
    proc = child(notes, "READY=1")
    notes.follow(proc.pid)
    proc.wait(10)
    notes.join()
    assert not notes.dir.exists()


def test_start_vfiod_refuses_a_notify_socket_of_the_callers_own(tmp_path: Path) -> None:
    bus = PrivateBus()  # never started: the refusal comes first
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        start_vfiod(bus, tmp_path / "sim", extra_env={"NOTIFY_SOCKET": str(tmp_path / "n")})


def test_children_run_this_vfiod_first() -> None:
    here = str(Path(vfiod.__file__).resolve().parent.parent)
    env = same_vfiod_env({"PYTHONPATH": f"/elsewhere{os.pathsep}{here}"})
    assert env["PYTHONPATH"].split(os.pathsep) == [here, "/elsewhere"]
