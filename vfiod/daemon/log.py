"""Logging for the daemon: journald with structured fields under systemd, else stderr.

One line per event. Callers pass the device and the operation as ``extra`` fields
(``VFIOD_DEVICE``, ``VFIOD_OPERATION``) so that ``journalctl VFIOD_DEVICE=0000:06:00.0``
finds everything that happened to a device; on stderr they are appended to the line.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from vfiod.printable import printable

LOGGER_NAME = "vfiod"
FIELDS = ("VFIOD_DEVICE", "VFIOD_OPERATION")

log = logging.getLogger(LOGGER_NAME)


class _StderrFormatter(logging.Formatter):
    """``vfiod: bind: 0000:06:00.0 ...`` plus the structured fields that were given."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"vfiod[{record.levelname.lower()}]: {record.getMessage()}"
        fields = [f"{name}={getattr(record, name)}" for name in FIELDS
                  if getattr(record, name, None)]
        if fields:
            line += " [" + " ".join(fields) + "]"
        if record.exc_info:
            # Tracebacks go to the operator's log only, never to a D-Bus client.
            line += "\n" + self.formatException(record.exc_info)
        return line


class _PrintableFilter(logging.Filter):
    """Escapes control characters in every message (a process name may carry any)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = printable(message)
        if safe is not message:
            record.msg, record.args = safe, None
        return True


def journal_connected() -> bool:
    """True when stderr is systemd's journal stream (JOURNAL_STREAM names it).

    The variable is inherited by children whose stderr may be redirected, so it is
    trusted only when its device:inode pair is stderr's.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(verbose: bool = False) -> None:
    """Send the ``vfiod`` logger to journald (structured) or to stderr."""
    handler: logging.Handler | None = None
    if journal_connected():
        try:
            from systemd.journal import JournalHandler  # optional dependency

            handler = JournalHandler(SYSLOG_IDENTIFIER="vfiod")
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_StderrFormatter())
    handler.addFilter(_PrintableFilter())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    # dbus-fast logs a service exception with its traceback; keep those in our log.
    dbus_log = logging.getLogger("dbus_fast")
    dbus_log.handlers[:] = [handler]
    dbus_log.propagate = False


def fields(device: str | None = None, operation: str | None = None) -> dict[str, Any]:
    """The ``extra`` mapping for a log call about *device* and *operation*."""
    extra: dict[str, Any] = {}
    if device:
        extra["VFIOD_DEVICE"] = device
    if operation:
        extra["VFIOD_OPERATION"] = operation
    return extra
