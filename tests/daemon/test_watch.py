"""What uevents ask of the daemon, a lost-events error turning into a rescan, and a
holder's exit told before holders are rechecked."""

from __future__ import annotations

import asyncio
import errno
import os

from vfiod.daemon.watch import Changes, HolderWatcher, UeventWatcher
from vfiod.host.base import EventSource, UEvent
from vfiod.host.holders import HolderEvent

GPU_PATH = "/devices/pci0000:00/0000:00:02.0/0000:03:00.0/0000:04:10.0/0000:06:00.0"


def _pci(action: str, address: str = "0000:06:00.0") -> UEvent:
    return UEvent(action, GPU_PATH, "pci", {"PCI_SLOT_NAME": address})


def test_bind_and_unbind_ask_for_a_refresh_of_that_function() -> None:
    changes = Changes()
    changes.note(_pci("unbind"))
    changes.note(_pci("bind"))
    assert (changes.rescan, changes.refresh, changes.added) == (False, {"0000:06:00.0"}, set())


def test_an_added_function_asks_for_a_rescan_and_is_remembered_as_added() -> None:
    changes = Changes()
    changes.note(_pci("add", "0000:11:00.0"))
    assert changes.rescan and changes.added == {"0000:11:00.0"}


def test_a_child_going_away_refreshes_its_pci_function() -> None:
    changes = Changes()
    changes.note(UEvent("remove", GPU_PATH + "/drm/card1", "drm"))
    assert changes.refresh == {"0000:06:00.0"} and not changes.rescan


def test_virtual_devices_ask_for_nothing() -> None:
    changes = Changes()
    changes.note(UEvent("add", "/devices/virtual/vfio/31", "vfio"))
    assert not changes


class _OverflowingSource(EventSource):
    """An event source whose queue overflowed: the first receive() says ENOBUFS."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.write(self.write_fd, b"x")
        self.overflowed = True

    def fileno(self) -> int:
        return self.read_fd

    def receive(self) -> list[UEvent]:
        os.read(self.read_fd, 1)
        if self.overflowed:
            self.overflowed = False
            raise OSError(errno.ENOBUFS, "events lost")
        return []

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class _Host:
    def __init__(self, source: EventSource) -> None:
        self.source = source

    def open_events(self) -> EventSource:
        return self.source


def test_lost_events_turn_into_a_full_rescan() -> None:
    got: list[Changes] = []

    async def scenario() -> None:
        done = asyncio.Event()

        async def handler(changes: Changes) -> None:
            got.append(changes)
            done.set()

        watcher = UeventWatcher(_Host(_OverflowingSource()), handler)  # type: ignore[arg-type]
        watcher.start()
        try:
            await asyncio.wait_for(done.wait(), 5)
        finally:
            watcher.stop()

    asyncio.run(scenario())
    assert len(got) == 1 and got[0].rescan


class _HolderSource:
    """A holder event source whose first receive() gives *events* (by default: a node
    event, then holder 4242 exited)."""

    polling = False
    why_polling = ""

    def __init__(self, events: list[HolderEvent] | None = None) -> None:
        self.events = [HolderEvent("node"), HolderEvent("exit", 4242)] \
            if events is None else events
        self.read_fd, self.write_fd = os.pipe()
        os.write(self.write_fd, b"x")

    def fileno(self) -> int:
        return self.read_fd

    def watch_pids(self, pids: list[int]) -> list[int]:
        return []

    def receive(self) -> list[HolderEvent]:
        os.read(self.read_fd, 1)
        return self.events

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class _HolderHost:
    def __init__(self, events: list[HolderEvent] | None = None) -> None:
        self.events = events

    def open_holder_events(self) -> _HolderSource:
        return _HolderSource(self.events)


def test_a_holders_exit_is_told_at_once_then_holders_are_rechecked() -> None:
    order: list[object] = []

    async def scenario() -> None:
        rechecked = asyncio.Event()

        async def handler() -> None:
            order.append("recheck")
            rechecked.set()

        watcher = HolderWatcher(_HolderHost(), handler, list,  # type: ignore[arg-type]
                                on_exit=order.append)
        watcher.start()
        try:
            await asyncio.wait_for(rechecked.wait(), 5)
        finally:
            watcher.stop()

    asyncio.run(scenario())
    assert order == [4242, "recheck"]


def _rechecks_of(events: list[HolderEvent], *, operating_on: set[int],
                 resume_after: float | None) -> list[float]:
    """When (seconds after start) the watcher rechecked holders, given one batch of
    *events* while vfiod operates on *operating_on*, resumed after *resume_after*."""
    times: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def handler() -> None:
            times.append(loop.time() - began)

        watcher = HolderWatcher(_HolderHost(events), handler, list,  # type: ignore[arg-type]
                                operating_on=operating_on.__contains__)
        watcher.start()
        try:
            if resume_after is not None:
                await asyncio.sleep(resume_after)
                watcher.resume()
            await asyncio.sleep(0.5)
        finally:
            watcher.stop()

    asyncio.run(scenario())
    return times


def test_node_events_of_a_group_vfiod_operates_on_wait_for_the_operations_end() -> None:
    times = _rechecks_of([HolderEvent("node", group=31)], operating_on={31},
                         resume_after=0.3)
    assert len(times) == 1 and times[0] >= 0.3


def test_node_events_of_a_group_vfiod_does_not_hold_are_rechecked_at_once() -> None:
    times = _rechecks_of([HolderEvent("node", group=31), HolderEvent("node", group=9)],
                         operating_on={31}, resume_after=None)
    assert len(times) == 1 and times[0] < 0.3


def test_a_holders_exit_is_never_held_back() -> None:
    times = _rechecks_of([HolderEvent("node", group=31), HolderEvent("exit", 4242)],
                         operating_on={31}, resume_after=None)
    assert len(times) == 1 and times[0] < 0.3


def test_resuming_with_nothing_held_back_rechecks_nothing() -> None:
    assert _rechecks_of([], operating_on={31}, resume_after=0.1) == []
