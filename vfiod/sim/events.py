"""uevents of the simulated kernel, delivered to every open EventSource.

Each source has its own queue and a pipe whose read end is its ``fileno()``: a byte is
written when the queue goes from empty to non-empty, so an asyncio reader wakes once per
batch. Like a netlink socket, a source that falls behind by more than ``QUEUE_LIMIT``
events loses the newest ones and its next ``receive()`` raises ``OSError(ENOBUFS)``.

Processes outside the one that runs the simulated kernel (a simulated compositor, a
test) receive the same events through vfiod.sim.uevent_stream, as a process on a real
host opens a netlink socket.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import deque

from vfiod.host.base import EventSource, UEvent
from vfiod.sim.uevent_stream import EXTERNAL_DIR, ListenerFanout

QUEUE_LIMIT = 10_000


class SimEventSource(EventSource):
    """One listener's queue of simulated uevents."""

    def __init__(self, hub: EventHub, limit: int = QUEUE_LIMIT) -> None:
        self._hub = hub
        self._limit = limit
        self._queue: deque[UEvent] = deque()
        self._lock = threading.Lock()
        self._overflowed = False
        self._signalled = False
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.closed = False

    def fileno(self) -> int:
        return self._read_fd

    def push(self, event: UEvent) -> None:
        """Queue one event (called by the kernel on the thread that caused it)."""
        with self._lock:
            if self.closed:
                return
            if len(self._queue) >= self._limit:
                self._overflowed = True
            else:
                self._queue.append(event)
            if not self._signalled:
                self._signalled = True
                try:
                    os.write(self._write_fd, b"!")
                except BlockingIOError:  # the pipe is full: it is readable anyway
                    pass

    def receive(self) -> list[UEvent]:
        with self._lock:
            if self.closed:
                return []
            try:
                while os.read(self._read_fd, 4096):
                    pass
            except BlockingIOError:
                pass
            self._signalled = False
            if self._overflowed:
                self._overflowed = False
                raise OSError(errno.ENOBUFS, "uevents were lost: rescan")
            events = list(self._queue)
            self._queue.clear()
            return events

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._queue.clear()
            os.close(self._read_fd)
            os.close(self._write_fd)
        self._hub.detach(self)


class EventHub:
    """Fans the kernel's uevents out to every open source and numbers them."""

    def __init__(self, seqnum: int = 0, root: str | os.PathLike[str] | None = None) -> None:
        self._sources: list[SimEventSource] = []
        self._lock = threading.Lock()
        self.seqnum = seqnum
        #: Writes to the FIFOs of external listeners (None: no external listeners).
        self._external = (ListenerFanout(os.path.join(root, EXTERNAL_DIR))
                          if root is not None else None)

    def open(self, limit: int = QUEUE_LIMIT) -> SimEventSource:
        """A new source receiving every event from now on; one that falls *limit*
        events behind loses the newest (ENOBUFS)."""
        source = SimEventSource(self, limit)
        with self._lock:
            self._sources.append(source)
        return source

    def detach(self, source: SimEventSource) -> None:
        """Stop delivering to *source*."""
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def emit(self, action: str, devpath: str, subsystem: str, props: dict[str, str]) -> UEvent:
        """Send one event; ACTION, DEVPATH, SUBSYSTEM and SEQNUM are added as netlink does.

        As a real host's event source delivers it: the kernel drops MODALIAS from every
        ``unbind`` (lib/kobject_uevent.c, zap_modalias_env: udev must not load a module
        for a device that was just unbound), and libudev reports DEVNAME as the node's
        path under /dev.
        """
        props = dict(props)
        if action == "unbind":
            props.pop("MODALIAS", None)
        if "DEVNAME" in props and not props["DEVNAME"].startswith("/"):
            props["DEVNAME"] = "/dev/" + props["DEVNAME"]
        with self._lock:
            self.seqnum += 1
            properties = {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": subsystem,
                          **props, "SEQNUM": str(self.seqnum)}
            event = UEvent(action, devpath, subsystem, properties)
            # Pushed under the lock so that every source sees events in SEQNUM order.
            for source in self._sources:
                source.push(event)
            if self._external is not None:
                self._external.send(event.properties)
        return event

    def close(self) -> None:
        """Close every source still open, and the external listeners' FIFOs."""
        with self._lock:
            sources = list(self._sources)
            if self._external is not None:
                self._external.close()
        for source in sources:
            source.close()

