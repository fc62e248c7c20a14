"""Events about holders: /dev/vfio group nodes opened or closed, holder processes exiting.

The uevent source (``Host.open_events()``) says when devices change; this one says when
the processes that hold them may have changed, so the daemon knows when to recheck who
holds a group without polling /proc. It is one epoll descriptor for an event loop,
over an inotify watch on /dev/vfio and /dev/vfio/devices (a guest may open only a
device's iommufd cdev; and on /dev, for /dev/vfio appearing when vfio loads) and one pidfd per holder process (a guest may die without closing cleanly).
Without inotify it still watches pidfds and says ``polling``: the caller then rechecks
on a timer. That core (epoll, pidfds, optional inotify) is ``PidfdEpoll``, shared with
vfiod.host.closing's CloseWatch.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vfiod.host import paths


@dataclass(frozen=True)
class HolderEvent:
    """Something that may have changed who holds a /dev/vfio node."""

    kind: str  # "node": a /dev/vfio node opened, closed or removed; "exit": a holder died
    pid: int = 0  # the holder that exited
    group: int | None = None  # a group node's event: its group (None: a cdev, /dev/vfio)


class PidfdEpoll:
    """One epoll descriptor over an optional inotify descriptor and one pidfd per
    watched process: the core of HolderEventSource and closing.CloseWatch."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self._pidfds: dict[int, int] = {}  # fd -> pid
        #: The inotify descriptor (an inotify_simple.INotify), None without inotify.
        self.inotify: Any = None
        #: inotify_simple.flags, once open_inotify succeeded.
        self.flags: Any = None
        #: True when inotify is unavailable: the caller must recheck on a timer.
        self.polling = False
        #: Why polling is on ("" when it is not).
        self.why_polling = ""

    def open_inotify(self, add_watches: Callable[[], None]) -> None:
        """Open inotify, let *add_watches* add its watches (on ``self.inotify`` with
        ``self.flags``) and poll it. Without inotify_simple, or when that fails with
        OSError, there is no inotify and ``polling`` says why."""
        try:
            from inotify_simple import INotify, flags

            self.flags = flags
            self.inotify = INotify()
            add_watches()
            self.epoll.register(self.inotify.fileno(), select.EPOLLIN)
        except (ImportError, OSError) as exc:
            if self.inotify is not None:
                self.inotify.close()
            self.inotify = None
            self.polling = True
            self.why_polling = str(exc)

    def watch_pids(self, pids: Iterable[int]) -> list[int]:
        """Watch these processes' exits; return those already gone (no pidfd)."""
        gone = []
        watched = set(self._pidfds.values())
        for pid in set(pids) - watched:
            if pid <= 0:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:  # ESRCH: gone already
                gone.append(pid)
                continue
            self._pidfds[fd] = pid
            self.epoll.register(fd, select.EPOLLIN)
        return gone

    def poll(self, timeout: float) -> list[int | None]:
        """What became ready within *timeout* seconds, in epoll's order: None when
        inotify has events to read, a pid for a watched process that exited (its pidfd
        is closed, it is no longer watched)."""
        ready: list[int | None] = []
        for fd, _ in self.epoll.poll(timeout):
            if self.inotify is not None and fd == self.inotify.fileno():
                ready.append(None)
            elif fd in self._pidfds:
                pid = self._pidfds.pop(fd)
                self.epoll.unregister(fd)
                os.close(fd)
                ready.append(pid)
        return ready

    def close(self) -> None:
        """Close inotify, every pidfd and the epoll descriptor."""
        for fd in list(self._pidfds):
            os.close(fd)
        self._pidfds.clear()
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
        self.epoll.close()


class HolderEventSource:
    """Holder events from inotify on the host's /dev/vfio and pidfds of holder processes."""

    def __init__(self, dev_dir: str, vfio_dir: str) -> None:
        self._dev_dir = dev_dir
        self._vfio_dir = vfio_dir
        self._dev_wd: int | None = None
        self._vfio_wd: int | None = None
        self._cdev_wd: int | None = None
        self._core = PidfdEpoll()
        self._core.open_inotify(self._add_watches)
        #: True when inotify is unavailable: the caller must recheck on a timer.
        self.polling = self._core.polling
        #: Why polling is on ("" when it is not).
        self.why_polling = self._core.why_polling

    def fileno(self) -> int:
        """A descriptor that becomes readable when events are waiting."""
        return self._core.epoll.fileno()

    def watch_pids(self, pids: set[int] | list[int]) -> list[int]:
        """Watch these holder processes' exits; return those already gone (no pidfd)."""
        return self._core.watch_pids(pids)

    def receive(self) -> list[HolderEvent]:
        """Every event waiting now; never blocks."""
        events: list[HolderEvent] = []
        for pid in self._core.poll(0):
            if pid is not None:
                events.append(HolderEvent("exit", pid))
                continue
            touched = self._read_inotify()
            events += [HolderEvent("node", group=g)
                       for g in sorted(g for g in touched if g is not None)]
            if None in touched:
                events.append(HolderEvent("node"))
        return events

    def close(self) -> None:
        """Stop watching; close inotify, every pidfd and the epoll descriptor."""
        self._core.close()

    def _add_watches(self) -> None:
        self._dev_wd = self._core.inotify.add_watch(
            self._dev_dir, self._core.flags.CREATE | self._core.flags.ONLYDIR)
        self._watch_vfio_dir()

    def _watch_vfio_dir(self) -> None:
        inotify, f = self._core.inotify, self._core.flags
        assert inotify is not None
        try:
            self._vfio_wd = inotify.add_watch(
                self._vfio_dir,
                f.OPEN | f.CLOSE_WRITE | f.CLOSE_NOWRITE | f.CREATE | f.DELETE | f.ONLYDIR)
        except OSError:
            self._vfio_wd = None  # not there yet
        # A guest may open only a device's iommufd cdev (6.6+): watch those opens too.
        try:
            self._cdev_wd = inotify.add_watch(
                os.path.join(self._vfio_dir, "devices"),
                f.OPEN | f.CLOSE_WRITE | f.CLOSE_NOWRITE | f.ONLYDIR)
        except OSError:
            self._cdev_wd = None  # a kernel without cdevs, or vfio not loaded

    def _read_inotify(self) -> set[int | None]:
        """The groups whose nodes had a holder event (None for any other node)."""
        inotify, f = self._core.inotify, self._core.flags
        assert inotify is not None
        touched: set[int | None] = set()
        vfio_name = os.path.basename(paths.VFIO_DIR)
        for event in inotify.read(timeout=0):
            if event.wd == self._dev_wd:
                if event.name == vfio_name:
                    self._watch_vfio_dir()
                    touched.add(None)
            elif event.wd == self._vfio_wd:
                if event.mask & f.IGNORED:
                    self._vfio_wd = None  # /dev/vfio went away (vfio unloaded)
                elif event.name.isdigit():  # a group node, not "vfio"
                    if self._holder_event(event.mask):
                        touched.add(int(event.name))
                elif event.name == "devices" and event.mask & f.CREATE:
                    self._watch_vfio_dir()  # the cdev folder appeared
            elif event.wd == self._cdev_wd:
                if event.mask & f.IGNORED:
                    self._cdev_wd = None
                elif event.name and self._holder_event(event.mask):
                    touched.add(None)
        return touched

    def _holder_event(self, mask: int) -> bool:
        """Whether an event on a node can change who holds it: an open, a close, a
        removal. Not a creation (a function bound to vfio-pci): nobody holds a new
        node, and its first open is an event of its own. Skipping creations saves
        the /proc scan a bind would cost twice (group node, cdev)."""
        return not mask & self._core.flags.CREATE
