"""Waiting for device nodes to be closed: woken by the close itself or the holder's exit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from vfiod.host.closing import RECHECK, CloseWatch, wait_until_closed


def test_a_close_in_a_watched_folder_wakes_the_wait(tmp_path: Path) -> None:
    node = tmp_path / "card0"
    node.write_text("")
    fd = os.open(node, os.O_RDWR)
    watch = CloseWatch([str(tmp_path)])
    try:
        threading.Timer(0.2, os.close, [fd]).start()
        began = time.monotonic()
        watch.wait(10.0)
        assert time.monotonic() - began < 5.0
    finally:
        watch.close()


def test_a_watched_holder_exiting_wakes_the_wait(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    watch = CloseWatch([str(tmp_path)])
    try:
        watch.watch_pids([proc.pid])
        began = time.monotonic()
        watch.wait(10.0)
        assert time.monotonic() - began < 5.0
    finally:
        watch.close()
        proc.wait()


def test_without_inotify_the_wait_returns_to_recheck(tmp_path: Path) -> None:
    watch = CloseWatch([str(tmp_path)])
    watch.polling = True  # as when inotify could not be set up
    try:
        began = time.monotonic()
        watch.wait(10.0)
        assert time.monotonic() - began < RECHECK + 1.0
    finally:
        watch.close()


def test_the_last_scan_is_returned_when_the_timeout_runs_out(tmp_path: Path) -> None:
    watch = CloseWatch([str(tmp_path)])
    try:
        left = wait_until_closed(watch, lambda: {"/dev/dri/card0": [os.getpid()]}, 0.2)
    finally:
        watch.close()
    assert left == {"/dev/dri/card0": [os.getpid()]}


def test_nothing_held_returns_at_once_without_waiting(tmp_path: Path) -> None:
    watch = CloseWatch([str(tmp_path)])
    try:
        began = time.monotonic()
        assert wait_until_closed(watch, dict, 10.0) == {}
        assert time.monotonic() - began < 1.0
    finally:
        watch.close()


def test_a_holder_gone_already_is_left_to_the_next_scan(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    watch = CloseWatch([str(tmp_path)])
    try:
        assert watch.watch_pids([gone.pid]) is None
        began = time.monotonic()
        watch.wait(0.2)  # nothing to wake it
        assert time.monotonic() - began >= 0.15
    finally:
        watch.close()
