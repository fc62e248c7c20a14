"""The kernel's end of the simulated uevent stream: FIFOs kept open, the folder listed
only when it changed, listeners that come and go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vfiod.sim import uevent_stream
from vfiod.sim.uevent_stream import EXTERNAL_DIR, ListenerFanout, UeventListener


def _event(n: int) -> dict[str, str]:
    return {"ACTION": "change", "SEQNUM": str(n)}


def _seqnums(listener: UeventListener) -> list[str]:
    return [e["SEQNUM"] for e in listener.receive(1.0)]


def test_nobody_listening_is_no_error(tmp_path: Path) -> None:
    fanout = ListenerFanout(str(tmp_path / EXTERNAL_DIR))
    fanout.send(_event(1))
    fanout.close()


def test_listeners_joining_in_quick_succession_each_get_the_events_from_then_on(
        tmp_path: Path) -> None:
    fanout = ListenerFanout(str(tmp_path / EXTERNAL_DIR))
    first = UeventListener(tmp_path)
    fanout.send(_event(1))
    second = UeventListener(tmp_path)  # likely within the same mtime tick
    fanout.send(_event(2))
    third = UeventListener(tmp_path)
    fanout.send(_event(3))
    try:
        assert _seqnums(first) == ["1", "2", "3"]
        assert _seqnums(second) == ["2", "3"]
        assert _seqnums(third) == ["3"]
    finally:
        for listener in (first, second, third):
            listener.close()
        fanout.close()


def test_the_folder_is_listed_again_only_when_it_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uevent_stream, "SETTLED_NS", -10**18)  # every mtime settled
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(uevent_stream.os, "listdir",
                        lambda path: listed.append(path) or real_listdir(path))
    fanout = ListenerFanout(str(tmp_path / EXTERNAL_DIR))
    with UeventListener(tmp_path) as listener:
        for n in range(50):
            fanout.send(_event(n))
        assert len(_seqnums(listener)) == 50
        assert len(listed) == 1
        with UeventListener(tmp_path) as late:
            fanout.send(_event(50))
            assert len(listed) == 2
            assert _seqnums(late) == ["50"]
    fanout.close()


def test_a_listener_that_closed_has_its_fifo_closed_at_the_next_event(tmp_path: Path) -> None:
    fanout = ListenerFanout(str(tmp_path / EXTERNAL_DIR))
    listener = UeventListener(tmp_path)
    fanout.send(_event(1))
    assert len(fanout._fds) == 1
    listener.close()
    fanout.send(_event(2))
    assert fanout._fds == {}
    fanout.close()


def test_a_listener_whose_process_went_away_has_its_fifo_removed(tmp_path: Path) -> None:
    fanout = ListenerFanout(str(tmp_path / EXTERNAL_DIR))
    listener = UeventListener(tmp_path)
    fanout.send(_event(1))  # its FIFO is open for writing now
    os.close(listener._keep)  # as when its process dies: no reader, FIFO left behind
    os.close(listener._fd)
    fanout.send(_event(2))
    assert not os.path.exists(listener.path)
    assert fanout._fds == {}
    fanout.close()


def test_a_fifo_without_a_reader_found_in_the_folder_is_removed(tmp_path: Path) -> None:
    (tmp_path / EXTERNAL_DIR).mkdir()
    stale = tmp_path / EXTERNAL_DIR / "1-1"
    os.mkfifo(stale, 0o600)
    fanout = ListenerFanout(str(tmp_path / EXTERNAL_DIR))
    fanout.send(_event(1))
    assert not stale.exists()
    fanout.close()


def test_after_close_events_still_reach_listeners_and_nothing_is_kept_open(
        tmp_path: Path) -> None:
    fanout = ListenerFanout(str(tmp_path / EXTERNAL_DIR))
    with UeventListener(tmp_path) as listener:
        fanout.send(_event(1))
        fanout.close()
        assert fanout._fds == {}
        fanout.send(_event(2))
        assert fanout._fds == {}
        assert _seqnums(listener) == ["1", "2"]
