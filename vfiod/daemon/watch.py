"""Watching the host: kernel uevents, and who holds /dev/vfio group nodes.

Both watchers live on the asyncio loop (add_reader) and never touch the host
themselves: they collect what changed and hand it, coalesced, to an async handler
that does the work on worker threads.

- UeventWatcher: host.open_events() (pyudev's kernel netlink on a real host, the
  simulated kernel's pipe under --simulate). PCI add/remove ask for a rescan;
  bind/unbind/change/move and events of a function's children ask for a refresh of
  that function; a lost-events error (ENOBUFS) asks for a rescan.
- HolderWatcher: inotify on /dev/vfio (a guest opening or closing a group node) plus
  a pidfd per holder process (it may die without closing cleanly); without inotify,
  a poll every 5 s.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from vfiod.daemon.log import log
from vfiod.discovery import pci_ancestor
from vfiod.host.base import EventSource, Host, UEvent

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
            address = event.pci_address or os.path.basename(event.devpath)
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
    """Calls *handler* when a process may have opened or closed a /dev/vfio group node."""

    def __init__(self, host: Host, handler: Callable[[], Awaitable[None]],
                 holder_pids: Callable[[], Iterable[int]]) -> None:
        self.host = host
        self.handler = handler
        self.holder_pids = holder_pids
        self._coalescer = _Coalescer("holders", self._run)
        self._inotify: object | None = None
        self._dev_wd: int | None = None
        self._vfio_wd: int | None = None
        self._pidfds: dict[int, int] = {}
        self._poll: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Watch /dev/vfio with inotify (or poll), and the current holders' pidfds."""
        loop = asyncio.get_running_loop()
        try:
            from inotify_simple import INotify, flags

            self._flags = flags
            self._inotify = inotify = INotify()
            # /dev/vfio appears when vfio loads: watch /dev for it.
            self._dev_wd = inotify.add_watch(self.host.real_path("/dev"),
                                             flags.CREATE | flags.ONLYDIR)
            self._watch_vfio_dir()
            loop.add_reader(inotify.fileno(), self._inotify_readable)
        except (ImportError, OSError) as exc:
            log.warning("cannot watch /dev/vfio with inotify (%s); polling every %g s",
                        exc, POLL_INTERVAL)
            self._inotify = None
            self._schedule_poll()
        self.watch_pids(self.holder_pids())

    def stop(self) -> None:
        """Stop watching; close inotify and every pidfd."""
        loop = asyncio.get_running_loop()
        if self._inotify is not None:
            loop.remove_reader(self._inotify.fileno())  # type: ignore[attr-defined]
            self._inotify.close()  # type: ignore[attr-defined]
            self._inotify = None
        for pid in list(self._pidfds):
            self._forget_pid(pid)
        if self._poll is not None:
            self._poll.cancel()
        self._coalescer.cancel()

    def kick(self) -> None:
        """Re-check holders soon."""
        self._coalescer.kick()

    def watch_pids(self, pids: Iterable[int]) -> None:
        """Watch these holder processes' exits through pidfds."""
        loop = asyncio.get_running_loop()
        for pid in set(pids) - set(self._pidfds):
            if pid <= 0:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:  # ESRCH: gone already; the next check notices
                self.kick()
                continue
            self._pidfds[pid] = fd
            loop.add_reader(fd, self._pid_exited, pid)

    def _pid_exited(self, pid: int) -> None:
        self._forget_pid(pid)
        self.kick()

    def _forget_pid(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _watch_vfio_dir(self) -> None:
        assert self._inotify is not None
        f = self._flags
        try:
            self._vfio_wd = self._inotify.add_watch(  # type: ignore[attr-defined]
                self.host.real_path("/dev/vfio"),
                f.OPEN | f.CLOSE_WRITE | f.CLOSE_NOWRITE | f.CREATE | f.DELETE | f.ONLYDIR)
        except OSError:
            self._vfio_wd = None  # not there yet

    def _inotify_readable(self) -> None:
        assert self._inotify is not None
        interesting = False
        for event in self._inotify.read(timeout=0):  # type: ignore[attr-defined]
            if event.wd == self._dev_wd:
                if event.name == "vfio":
                    self._watch_vfio_dir()
                    interesting = True
            elif event.wd == self._vfio_wd:
                if event.mask & self._flags.IGNORED:
                    self._vfio_wd = None  # /dev/vfio went away (vfio unloaded)
                elif event.name.isdigit():  # a group node, not "vfio" or "devices"
                    interesting = True
        if interesting:
            self.kick()

    def _schedule_poll(self) -> None:
        def tick() -> None:
            self.kick()
            self._schedule_poll()

        self._poll = asyncio.get_running_loop().call_later(POLL_INTERVAL, tick)

    async def _run(self) -> None:
        await self.handler()
        self.watch_pids(self.holder_pids())
