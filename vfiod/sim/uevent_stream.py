"""The simulated kernel's uevents for other processes: the simulation's netlink socket.

A process outside the one that runs the simulated kernel (a simulated compositor that
must see a ``remove`` of its card, a test) opens a ``UeventListener`` on the simulated
root: a FIFO in the root's ``EXTERNAL_DIR``. The kernel's event hub writes every event
to every FIFO there as one JSON line, in one write (atomic below PIPE_BUF). A listener
that stopped reading loses events (its FIFO is full) and one that went away is
forgotten, as netlink drops messages for a full or closed socket.

Standard library only: a simulated holder process imports it and must start fast.
"""

from __future__ import annotations

import errno
import json
import os
import select
import time
from collections.abc import Mapping

#: Where, under the simulated root, processes outside the kernel's listen (one FIFO each).
EXTERNAL_DIR = ".sim-uevents"
#: A pipe write of at most this many bytes is atomic (PIPE_BUF): one event, one write.
ATOMIC_WRITE = 4096


#: A folder listing is trusted while the folder's mtime stays the same only once that
#: mtime is this old: two changes within one timestamp tick (a few ms, the kernel's
#: coarse clock) can leave the same mtime.
SETTLED_NS = 100_000_000


class ListenerFanout:
    """The kernel's end: writes every event to every listener's FIFO in *directory*,
    never blocking.

    The folder is listed again only when it changed (its mtime, or it was replaced);
    each listener's FIFO stays open for writing between events. A listener whose FIFO
    lost its reader (ENXIO on open, EPIPE on write: the process went away) has its FIFO
    removed; one whose FIFO went (closed) has the descriptor closed at the next event.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fds: dict[str, int] = {}  # listener FIFO name -> descriptor open for writing
        #: (st_dev, st_ino, st_mtime_ns) of the folder the listing in _fds is current
        #: for; None: list it again at the next event.
        self._listed: tuple[int, int, int] | None = None
        self._closed = False

    def send(self, properties: Mapping[str, str]) -> None:
        """Write one event (its properties, ACTION and SEQNUM included) to every
        listener's FIFO."""
        line = (json.dumps(dict(properties), separators=(",", ":")) + "\n").encode()
        if len(line) > ATOMIC_WRITE:
            return  # not one atomic write: a listener could read half an event
        self._refresh()
        for name, fd in list(self._fds.items()):
            try:
                os.write(fd, line)
            except BlockingIOError:
                pass  # full: that listener loses this event, as with netlink
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # no reader: the listener is gone
                    self._forget(name)
                    _unlink_quietly(os.path.join(self.directory, name))
        if self._closed:
            self._forget_all()  # after close(): nothing kept open

    def close(self) -> None:
        """Close every FIFO kept open (a later send() opens and closes them each time)."""
        self._closed = True
        self._forget_all()

    def _refresh(self) -> None:
        """Bring the open FIFOs up to the folder's listeners, listing it only when it
        may have changed."""
        try:
            st = os.stat(self.directory)  # before the listing: a change after it shows
        except OSError:
            self._forget_all()  # nobody listens (the common case)
            return
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if key == self._listed:
            return
        try:
            names = set(os.listdir(self.directory))
        except OSError:
            self._forget_all()
            return
        settled = time.time_ns() - st.st_mtime_ns > SETTLED_NS
        self._listed = key if settled else None
        for name in self._fds.keys() - names:
            self._forget(name)
        for name in names - self._fds.keys():
            path = os.path.join(self.directory, name)
            try:
                self._fds[name] = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader: the listener is gone
                    _unlink_quietly(path)

    def _forget(self, name: str) -> None:
        os.close(self._fds.pop(name))

    def _forget_all(self) -> None:
        for name in list(self._fds):
            self._forget(name)
        self._listed = None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class UeventListener:
    """One process's subscription to a simulated kernel's uevents, by its root.

    It receives the events sent from the moment it was made, each as its properties
    (ACTION, DEVPATH, SUBSYSTEM, SEQNUM and the device's own, DEVNAME as a /dev path).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        directory = os.path.join(root, EXTERNAL_DIR)
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{os.getpid()}-{time.monotonic_ns()}")
        os.mkfifo(self.path, 0o600)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Our own writer keeps the FIFO from reading as hung up (readable at EOF, for
        # ever) between the kernel's writes.
        self._keep = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._partial = b""

    def fileno(self) -> int:
        """A descriptor that becomes readable when events are waiting."""
        return self._fd

    def receive(self, timeout: float = 0.0) -> list[dict[str, str]]:
        """The events waiting (after up to *timeout* seconds for one), oldest first."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return []
        data = self._partial
        try:
            while chunk := os.read(self._fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        *lines, self._partial = data.split(b"\n")
        return [json.loads(line) for line in lines if line]

    def close(self) -> None:
        """Stop listening: the FIFO goes, and the kernel stops writing to it."""
        if self._fd >= 0:
            _unlink_quietly(self.path)
            os.close(self._keep)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> UeventListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
