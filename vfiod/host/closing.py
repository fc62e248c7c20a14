"""Waiting for processes to close device nodes: inotify close events and holder exits.

Asked to let go of a card, a desktop closes its DRM nodes or exits. Both are events:
inotify reports every close of a file in a watched folder (IN_CLOSE_*, also for
device nodes in devtmpfs), and a pidfd becomes readable when its process exits. After
each, /proc is scanned again for the nodes' holders; nothing is polled. Without inotify
the scan is repeated every ``RECHECK`` seconds until the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from vfiod.host.holders import PidfdEpoll

#: How often the holders are re-scanned when inotify is not available.
RECHECK = 0.25


class CloseWatch:
    """inotify on the folders of some nodes (their closes) and pidfds of their holders."""

    def __init__(self, real_dirs: Sequence[str]) -> None:
        self._dirs = sorted(set(real_dirs))
        self._core = PidfdEpoll()
        self._core.open_inotify(self._add_watches)
        #: True when inotify is unavailable: wait() then returns every RECHECK seconds.
        self.polling = self._core.polling

    def _add_watches(self) -> None:
        f = self._core.flags
        for directory in self._dirs:
            try:
                self._core.inotify.add_watch(
                    directory, f.CLOSE_WRITE | f.CLOSE_NOWRITE | f.DELETE | f.ONLYDIR)
            except OSError:
                pass  # a folder that went away: its nodes are closed

    def watch_pids(self, pids: Sequence[int]) -> None:
        """Also wake when one of these processes exits (one gone already is left to
        the next scan, which will not find it)."""
        self._core.watch_pids(pids)

    def wait(self, timeout: float) -> None:
        """Return after something may have changed, or after *timeout* seconds."""
        if self.polling:
            timeout = min(timeout, RECHECK)
        for pid in self._core.poll(max(timeout, 0.0)):
            if pid is None:
                self._core.inotify.read(timeout=0)  # drained: the caller scans again

    def close(self) -> None:
        """Close the inotify descriptor, every pidfd and the epoll descriptor."""
        self._core.close()


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
