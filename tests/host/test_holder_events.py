"""The host's holder events: a /dev/vfio group node opened or closed, a holder exiting."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vfiod.host.holders import HolderEvent, HolderEventSource


def _wait(source: HolderEventSource, timeout: float = 5.0) -> list[HolderEvent]:
    ready, _, _ = select.select([source], [], [], timeout)
    return source.receive() if ready else []


def _dev(tmp_path: Path) -> tuple[Path, Path]:
    dev, vfio = tmp_path / "dev", tmp_path / "dev" / "vfio"
    vfio.mkdir(parents=True)
    (vfio / "31").write_bytes(b"")
    return dev, vfio


def test_opening_a_group_node_is_a_node_event(tmp_path: Path) -> None:
    dev, vfio = _dev(tmp_path)
    source = HolderEventSource(str(dev), str(vfio))
    try:
        with open(vfio / "31", "rb"):
            pass
        assert HolderEvent("node", group=31) in _wait(source)
    finally:
        source.close()


def test_a_group_node_created_is_no_event_but_one_removed_is(tmp_path: Path) -> None:
    dev, vfio = _dev(tmp_path)
    source = HolderEventSource(str(dev), str(vfio))
    try:
        os.mknod(vfio / "32", 0o600 | stat.S_IFREG)  # as devtmpfs makes it: no open
        assert _wait(source, 0.2) == []
        (vfio / "31").unlink()
        assert HolderEvent("node", group=31) in _wait(source)
    finally:
        source.close()


def test_a_device_cdev_created_is_no_event_but_one_opened_is(tmp_path: Path) -> None:
    dev, vfio = _dev(tmp_path)
    (vfio / "devices").mkdir()
    source = HolderEventSource(str(dev), str(vfio))
    try:
        os.mknod(vfio / "devices" / "vfio0", 0o600 | stat.S_IFREG)
        assert _wait(source, 0.2) == []
        with open(vfio / "devices" / "vfio0", "rb"):
            pass
        assert HolderEvent("node") in _wait(source)
    finally:
        source.close()


def test_a_file_that_is_no_group_node_is_no_event(tmp_path: Path) -> None:
    dev, vfio = _dev(tmp_path)
    (vfio / "vfio").write_bytes(b"")
    source = HolderEventSource(str(dev), str(vfio))
    try:
        with open(vfio / "vfio", "rb"):
            pass
        assert _wait(source, 0.2) == []
    finally:
        source.close()


def test_a_watched_holder_exiting_is_an_exit_event_with_its_pid(tmp_path: Path) -> None:
    dev, vfio = _dev(tmp_path)
    source = HolderEventSource(str(dev), str(vfio))
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    try:
        assert source.watch_pids([holder.pid]) == []
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(5)
        assert _wait(source) == [HolderEvent("exit", holder.pid)]
    finally:
        holder.kill()
        holder.wait()
        source.close()


def test_a_holder_already_gone_is_reported_by_watch_pids(tmp_path: Path) -> None:
    dev, vfio = _dev(tmp_path)
    source = HolderEventSource(str(dev), str(vfio))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        assert source.watch_pids([gone.pid]) == [gone.pid]
    finally:
        source.close()


def test_dev_vfio_appearing_later_is_watched_from_then_on(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    source = HolderEventSource(str(dev), str(dev / "vfio"))
    try:
        (dev / "vfio").mkdir()
        assert HolderEvent("node") in _wait(source)
        (dev / "vfio" / "31").write_bytes(b"")
        with open(dev / "vfio" / "31", "rb"):
            pass
        assert HolderEvent("node", group=31) in _wait(source)
    finally:
        source.close()


def test_opening_a_device_cdev_is_a_node_event(tmp_path: Path) -> None:
    # A guest that uses only the iommufd cdev (6.6+) never opens the group node.
    dev, vfio = _dev(tmp_path)
    (vfio / "devices").mkdir()
    (vfio / "devices" / "vfio0").write_bytes(b"")
    source = HolderEventSource(str(dev), str(vfio))
    try:
        with open(vfio / "devices" / "vfio0", "rb"):
            pass
        assert HolderEvent("node") in _wait(source)
    finally:
        source.close()


def test_without_inotify_simple_it_polls_and_still_reports_exits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "inotify_simple", None)  # import fails
    dev, vfio = _dev(tmp_path)
    source = HolderEventSource(str(dev), str(vfio))
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    try:
        assert source.polling and source.why_polling
        with open(vfio / "31", "rb"):
            pass
        assert _wait(source, 0.2) == []
        assert source.watch_pids([holder.pid]) == []
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(5)
        assert _wait(source) == [HolderEvent("exit", holder.pid)]
    finally:
        holder.kill()
        holder.wait()
        source.close()
