"""A small QMP client: JSON lines over QEMU's unix socket, the standard library only.

A VM manager talks to QEMU this way: read the greeting, send ``qmp_capabilities``, then
one ``{"execute": ...}`` at a time, each answered by ``{"return": ...}`` or
``{"error": ...}``; asynchronous ``{"event": ...}`` lines may come in between and are
kept for ``wait_event``.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class QmpError(Exception):
    """QEMU answered a command with an error, or the connection broke."""


class Qmp:
    """One QMP connection, in capabilities-negotiated (command) mode."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")
        self.events: list[dict[str, Any]] = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise QmpError(f"not a QMP greeting: {greeting}")
        self.command("qmp_capabilities")

    def close(self) -> None:
        """Close the connection (QEMU keeps running)."""
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise QmpError("QEMU closed the QMP connection")
        message: dict[str, Any] = json.loads(line)
        return message

    def command(self, name: str, **arguments: Any) -> Any:
        """Execute one command and return its ``return`` value (QmpError on ``error``)."""
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\r\n")
        while True:
            message = self._read()
            if "event" in message:
                self.events.append(message)
            elif "error" in message:
                error = message["error"]
                raise QmpError(f"{name}: {error.get('class')}: {error.get('desc')}")
            elif "return" in message:
                return message["return"]

    def wait_event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """The first not yet taken event called *name*, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["event"] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"no {name} event within {timeout:g} s")
            self.sock.settimeout(left)
            message = self._read()
            if "event" in message:
                self.events.append(message)
