"""Waiting for processes to close device nodes: inotify close events and holder exits.

Asked to let go of a card, a desktop closes its DRM nodes or exits. Both are events:
inotify reports every close of a file in a watched folder (IN_CLOSE_*, also for
device nodes in devtmpfs), and a pidfd becomes readable when its process exits. After
each, /proc is scanned again for the nodes' holders; nothing is polled. Without inotify
the scan is repeated every ``RECHECK`` seconds until the deadline.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence

#: How often the holders are re-scanned when inotify is not available.
RECHECK = 0.25


class CloseWatch:
    """inotify on the folders of some nodes (their closes) and pidfds of their holders."""

    def __init__(self, real_dirs: Sequence[str]) -> None:
        self._epoll = select.epoll()
        self._pidfds: dict[int, int] = {}  # fd -> pid
        self._inotify: object | None = None
        #: True when inotify is unavailable: wait() then returns every RECHECK seconds.
        self.polling = False
        try:
            from inotify_simple import INotify, flags

            inotify = INotify()
            self._inotify = inotify
            for directory in sorted(set(real_dirs)):
                try:
                    inotify.add_watch(directory, flags.CLOSE_WRITE | flags.CLOSE_NOWRITE
                                      | flags.DELETE | flags.ONLYDIR)
                except OSError:
                    pass  # a folder that went away: its nodes are closed
            self._epoll.register(inotify.fileno(), select.EPOLLIN)
        except (ImportError, OSError):
            if self._inotify is not None:
                self._inotify.close()  # type: ignore[attr-defined]
            self._inotify = None
            self.polling = True

    def watch_pids(self, pids: Sequence[int]) -> None:
        """Also wake when one of these processes exits."""
        known = set(self._pidfds.values())
        for pid in set(pids) - known:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # gone already: the next scan will not find it
            self._pidfds[fd] = pid
            self._epoll.register(fd, select.EPOLLIN)

    def wait(self, timeout: float) -> None:
        """Return after something may have changed, or after *timeout* seconds."""
        if self.polling:
            timeout = min(timeout, RECHECK)
        for fd, _ in self._epoll.poll(max(timeout, 0.0)):
            if self._inotify is not None and fd == self._inotify.fileno():  # type: ignore[attr-defined]
                self._inotify.read(timeout=0)  # type: ignore[attr-defined]
            elif fd in self._pidfds:
                self._pidfds.pop(fd)
                self._epoll.unregister(fd)
                os.close(fd)

    def close(self) -> None:
        """Close the inotify descriptor, every pidfd and the epoll descriptor."""
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()
        if self._inotify is not None:
            self._inotify.close()  # type: ignore[attr-defined]
            self._inotify = None
        self._epoll.close()


def wait_until_closed(watch: CloseWatch, scan: Callable[[], dict[str, list[int]]],
                      timeout: float) -> dict[str, list[int]]:
    """Scan, and wait on *watch* between scans, until *scan* finds no holder or
    *timeout* seconds pass; the last scan's holders (pids by node)."""
    deadline = time.monotonic() + timeout
    while True:
        held = scan()
        if not held:
            return {}
        watch.watch_pids([pid for pids in held.values() for pid in pids])
        left = deadline - time.monotonic()
        if left <= 0:
            return held
        watch.wait(left)
