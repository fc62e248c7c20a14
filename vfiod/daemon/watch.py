"""Watching the host: kernel uevents, and who holds /dev/vfio group nodes.

Both watchers live on the asyncio loop (add_reader) and never touch the host
themselves: they collect what changed and hand it, coalesced, to an async handler
that does the work on worker threads.

- UeventWatcher: host.open_events() (pyudev's kernel netlink on a real host, the
  simulated kernel's pipe under --simulate). PCI add/remove ask for a rescan;
  bind/unbind/change/move and events of a function's children ask for a refresh of
  that function; a lost-events error (ENOBUFS) asks for a rescan.
- HolderWatcher: host.open_holder_events() (a guest opening or closing a group node,
  a holder process exiting); without inotify, a poll every 5 s.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from vfiod.daemon.log import log
from vfiod.discovery import pci_ancestor
from vfiod.host.base import EventSource, Host, UEvent
from vfiod.host.holders import HolderEventSource

POLL_INTERVAL = 5.0
#: Events of one burst (a group moving) are handled together.
SETTLE = 0.02


@dataclass
class Changes:
    """What a burst of uevents asks for."""

    rescan: bool = False
    refresh: set[str] = field(default_factory=set)
    added: set[str] = field(default_factory=set)

    def take(self) -> Changes:
        """Return the pending changes and start over."""
        out = Changes(self.rescan, set(self.refresh), set(self.added))
        self.rescan = False
        self.refresh.clear()
        self.added.clear()
        return out

    def __bool__(self) -> bool:
        return self.rescan or bool(self.refresh) or bool(self.added)

    def note(self, event: UEvent) -> None:
        """Record what one uevent asks for."""
        if event.subsystem == "pci":
            address = event.pci_address or event.devpath.rsplit("/", 1)[-1]
            if event.action in ("add", "remove"):
                self.rescan = True
                if event.action == "add":
                    self.added.add(address)
            else:
                self.refresh.add(address)
            return
        # A child (drm card, sound card, disk, vfio-dev) appearing or going changes
        # what uses its PCI function.
        if event.action in ("add", "remove", "bind", "unbind", "move"):
            address = pci_ancestor(event.devpath)
            if address is not None:
                self.refresh.add(address)


class _Coalescer:
    """Runs an async handler for a pending value, one run at a time, after a short settle."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def kick(self) -> None:
        """Ask for a run (now, or after the current one)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        while True:
            self._again = False
            await asyncio.sleep(SETTLE)
            try:
                await self._run()
            except Exception:
                log.exception("%s failed", self.name)
            if not self._again:
                return

    async def wait(self) -> None:
        """Wait for the current run to end (used at shutdown and by tests)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def cancel(self) -> None:
        """Stop running."""
        if self._task is not None:
            self._task.cancel()


class UeventWatcher:
    """Turns the host's uevents into coalesced Changes for *handler*."""

    def __init__(self, host: Host, handler: Callable[[Changes], Awaitable[None]]) -> None:
        self.host = host
        self.handler = handler
        self.pending = Changes()
        self.source: EventSource | None = None
        self._coalescer = _Coalescer("uevents", self._drain)

    def open(self) -> None:
        """Start receiving events; they queue in the source until start()."""
        if self.source is None:
            self.source = self.host.open_events()

    def start(self) -> None:
        """Watch the source on the running loop (opening it if open() was not called)."""
        self.open()
        assert self.source is not None
        asyncio.get_running_loop().add_reader(self.source.fileno(), self._readable)

    def stop(self) -> None:
        """Stop watching and close the source."""
        if self.source is not None:
            asyncio.get_running_loop().remove_reader(self.source.fileno())
            self.source.close()
            self.source = None
        self._coalescer.cancel()

    def _readable(self) -> None:
        assert self.source is not None
        try:
            events = self.source.receive()
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            log.warning("uevents were lost (the queue overflowed); rescanning every device")
            self.pending.rescan = True
            events = []
        for event in events:
            self.pending.note(event)
        if self.pending:
            self._coalescer.kick()

    async def _drain(self) -> None:
        changes = self.pending.take()
        if changes:
            await self.handler(changes)


class HolderWatcher:
    """Calls *handler* when a process may have opened or closed a /dev/vfio group node.

    The host's holder event source says when (a group node opened or closed, a holder
    exited); without inotify the watcher rechecks every POLL_INTERVAL seconds.
    """

    def __init__(self, host: Host, handler: Callable[[], Awaitable[None]],
                 holder_pids: Callable[[], Iterable[int]], *,
                 on_exit: Callable[[int], None] | None = None,
                 operating_on: Callable[[int], bool] = lambda group: False) -> None:
        self.host = host
        self.handler = handler
        self.holder_pids = holder_pids
        self._coalescer = _Coalescer("holders", self._run)
        self.source: HolderEventSource | None = None
        self._poll: asyncio.TimerHandle | None = None
        #: Called with a holder's pid as soon as its pidfd says it exited (while the
        #: kernel may still keep its exit status); it must not block.
        self.on_exit = on_exit
        #: Whether an operation of vfiod's own holds this group now (its lock): the
        #: events of that group's node are then its own (the fence's open and close;
        #: nobody else can open a group vfiod holds) and wait for resume().
        self.operating_on = operating_on
        self._held_back = False

    def start(self) -> None:
        """Watch the host's holder events (or poll), and the current holders' exits."""
        loop = asyncio.get_running_loop()
        self.source = self.host.open_holder_events()
        loop.add_reader(self.source.fileno(), self._readable)
        if self.source.polling:
            log.warning("cannot watch /dev/vfio with inotify (%s); polling every %g s",
                        self.source.why_polling, POLL_INTERVAL)
            self._schedule_poll()
        self.watch_pids(self.holder_pids())

    def stop(self) -> None:
        """Stop watching; close the event source."""
        if self.source is not None:
            asyncio.get_running_loop().remove_reader(self.source.fileno())
            self.source.close()
            self.source = None
        if self._poll is not None:
            self._poll.cancel()
        self._coalescer.cancel()

    def kick(self) -> None:
        """Re-check holders soon."""
        self._coalescer.kick()

    def watch_pids(self, pids: Iterable[int]) -> None:
        """Watch these holder processes' exits."""
        if self.source is not None and self.source.watch_pids(list(pids)):
            self.kick()  # gone already: the next check notices

    def resume(self) -> None:
        """An operation let go of its groups: recheck now if events were held back."""
        if self._held_back:
            self._held_back = False
            self.kick()

    def _readable(self) -> None:
        assert self.source is not None
        events = self.source.receive()
        if self.on_exit is not None:
            for event in events:
                if event.kind == "exit":
                    self.on_exit(event.pid)
        if not events:
            return
        if all(e.kind == "node" and e.group is not None and self.operating_on(e.group)
               for e in events):
            self._held_back = True  # one recheck when the operation ends, not one per event
            return
        self.kick()

    def _schedule_poll(self) -> None:
        def tick() -> None:
            self.kick()
            self._schedule_poll()

        self._poll = asyncio.get_running_loop().call_later(POLL_INTERVAL, tick)

    async def _run(self) -> None:
        await self.handler()
        self.watch_pids(self.holder_pids())
