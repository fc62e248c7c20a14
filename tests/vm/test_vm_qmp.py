"""The guest tests' QMP client and timings, against a QMP server played by a thread."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

from . import run
from .guest import timings
from .guest.qmp import Qmp, QmpError

Script = Callable[[socket.socket, Callable[[], dict[str, Any]]], None]


def send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\r\n")


@pytest.fixture
def qmp_server(tmp_path: Path) -> Iterator[Callable[[Script], str]]:
    """serve(script): a unix socket whose one connection gets the greeting, then *script*
    with the connection and a function reading the client's next request."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def serve(script: Script) -> str:
        path = str(tmp_path / "qmp.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        listeners.append(listener)

        def main() -> None:
            conn, _ = listener.accept()
            reader = conn.makefile("rb")
            send(conn, {"QMP": {"version": {}, "capabilities": []}})
            assert json.loads(reader.readline()) == {"execute": "qmp_capabilities"}
            send(conn, {"return": {}})
            script(conn, lambda: json.loads(reader.readline()))
            reader.close()
            conn.close()

        thread = threading.Thread(target=main, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield serve
    for thread in threads:
        thread.join(5)
    for listener in listeners:
        listener.close()


def test_a_command_returns_its_return_value_past_events(qmp_server: Callable[[Script], str]) -> None:
    def script(conn: socket.socket, request: Callable[[], dict[str, Any]]) -> None:
        assert request() == {"execute": "query-status"}
        send(conn, {"event": "STOP", "data": {}})
        send(conn, {"return": {"status": "running", "running": True}})

    with Qmp(qmp_server(script)) as qmp:
        assert qmp.command("query-status") == {"status": "running", "running": True}
        assert [e["event"] for e in qmp.events] == ["STOP"]


def test_arguments_are_sent_and_an_error_is_raised_with_its_class(qmp_server: Callable[[Script], str]) -> None:
    def script(conn: socket.socket, request: Callable[[], dict[str, Any]]) -> None:
        assert request() == {"execute": "device_del", "arguments": {"id": "x"}}
        send(conn, {"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}})

    with Qmp(qmp_server(script)) as qmp, \
            pytest.raises(QmpError, match="device_del: DeviceNotFound: Device 'x' not found"):
        qmp.command("device_del", id="x")


def test_wait_event_takes_an_event_that_arrives_after_the_return(qmp_server: Callable[[Script], str]) -> None:
    def script(conn: socket.socket, request: Callable[[], dict[str, Any]]) -> None:
        assert request() == {"execute": "system_reset"}
        send(conn, {"return": {}})
        send(conn, {"event": "RESET", "data": {"guest": False}})

    with Qmp(qmp_server(script)) as qmp:
        assert qmp.command("system_reset") == {}
        assert qmp.wait_event("RESET", 5)["data"] == {"guest": False}
        assert qmp.events == []


def test_a_closed_connection_is_an_error_not_a_hang(qmp_server: Callable[[Script], str]) -> None:
    def script(conn: socket.socket, request: Callable[[], dict[str, Any]]) -> None:
        assert request() == {"execute": "quit"}

    with Qmp(qmp_server(script)) as qmp, pytest.raises(QmpError, match="closed"):
        qmp.command("quit")


def test_recorded_times_are_written_to_the_results_and_shown_by_the_runner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFIOD_VM_RESULTS", str(tmp_path))
    monkeypatch.setattr(timings, "TIMES", {})
    timings.record("NIC", "start to guest", 3.441)
    timings.record("NIC", "system_reset", [0.16, 0.18])
    assert timings.lines(timings.read(tmp_path)) == [
        "NIC: start to guest 3.44 s, system_reset 0.16/0.18 s"]
    assert run.timings.read(tmp_path / "elsewhere") == {}
