"""sd_notify for the daemon: READY=1, STATUS= lines, WATCHDOG=1 and STOPPING=1.

Uses systemd-python when it is installed and a few lines of socket code otherwise (the
protocol is one datagram to $NOTIFY_SOCKET). Without NOTIFY_SOCKET nothing is sent; a
NOTIFY_SOCKET naming a missing socket is logged once and then ignored.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable

from vfiod.daemon.log import log
from vfiod.records import DeviceStatus, State


def _send_raw(message: str) -> bool:
    """The sd_notify protocol without libsystemd: one datagram to $NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(path)
        sock.sendall(message.encode())
    return True


try:
    from systemd.daemon import notify as _sd_notify  # optional dependency
except ImportError:  # pragma: no cover - depends on the install
    _sd_notify = _send_raw


def status_line(statuses: Iterable[DeviceStatus]) -> str:
    """``3 devices on vfio-pci, 1 in a guest`` (plus failures, when there are any)."""
    on_vfio = in_guest = failed = 0
    for st in statuses:
        if st.state in (State.VFIO, State.GUEST) or "vfio" in st.driver:
            on_vfio += 1
        if st.state is State.GUEST:
            in_guest += 1
        if st.state is State.ERROR:
            failed += 1
    line = f"{on_vfio} device{'' if on_vfio == 1 else 's'} on vfio-pci, {in_guest} in a guest"
    if failed:
        line += f", {failed} in error"
    return line


class Notifier:
    """Talks to the service manager; every method is a no-op outside systemd."""

    def __init__(self) -> None:
        self._broken = False
        self._last_status = ""
        self._watchdog: asyncio.TimerHandle | None = None

    def send(self, message: str) -> bool:
        """Send one notification; False when there is no service manager to hear it."""
        if self._broken:
            return False
        try:
            return bool(_sd_notify(message))
        except OSError as exc:  # FileNotFoundError for a missing socket, ECONNREFUSED
            self._broken = True
            log.warning("cannot notify the service manager at %s: %s",
                        os.environ.get("NOTIFY_SOCKET"), exc.strerror or exc)
            return False

    def ready(self, status: str) -> None:
        """The first scan and recovery are done and the bus name is ours."""
        self._last_status = status
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """Update the one-line status systemctl shows, when it changed."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def reloading(self) -> None:
        """The configuration is being reread (paired with ready_again)."""
        self.send("RELOADING=1")

    def ready_again(self) -> None:
        """The reload is over."""
        self.send("READY=1")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.send("STOPPING=1")

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> float | None:
        """Ping WATCHDOG=1 every WATCHDOG_USEC/2 from the event loop; the interval or None.

        Pinging from a loop timer means the pings stop when the loop is stuck, which is
        what the watchdog is for.
        """
        interval = watchdog_interval()
        if interval is None:
            return None

        def ping() -> None:
            self.send("WATCHDOG=1")
            self._watchdog = loop.call_later(interval, ping)

        ping()
        return interval

    def stop_watchdog(self) -> None:
        """Stop pinging."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when not asked for.

    WATCHDOG_PID, when set, must be our pid: the variable may be inherited by accident.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
