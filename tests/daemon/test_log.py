"""Logging: structured journald fields under systemd, one readable line on stderr otherwise."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vfiod.daemon.log import fields, journal_connected, log, setup_logging


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    handlers, level, propagate = list(log.handlers), log.level, log.propagate
    try:
        yield
    finally:
        log.handlers[:], log.level, log.propagate = handlers, level, propagate


def test_stderr_line_carries_the_device_and_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    setup_logging()
    log.info("bind %s: done", "0000:06:00.0", extra=fields("0000:06:00.0", "bind"))
    assert err.getvalue() == ("vfiod[info]: bind 0000:06:00.0: done "
                              "[VFIOD_DEVICE=0000:06:00.0 VFIOD_OPERATION=bind]\n")


def test_journal_stream_of_another_file_is_not_trusted(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    other = os.stat(tmp_path)
    monkeypatch.setenv("JOURNAL_STREAM", f"{other.st_dev}:{other.st_ino}")
    assert not journal_connected()


def test_under_journald_records_go_out_with_structured_fields(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("systemd.journal")
    stderr = open(tmp_path / "stderr", "w")  # noqa: SIM115 (closed by the test's end)
    st = os.fstat(stderr.fileno())
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    setup_logging()
    sent: list[dict[str, Any]] = []
    handler = log.handlers[0]
    assert type(handler).__name__ == "JournalHandler"

    def capture(text: str, /, **journal_fields: Any) -> None:
        sent.append({**journal_fields, "MESSAGE": text})

    handler.send = capture  # type: ignore[attr-defined]
    log.warning("reset %s failed", "0000:06:00.0", extra=fields("0000:06:00.0", "reset"))
    assert sent[0]["MESSAGE"] == "reset 0000:06:00.0 failed"
    assert sent[0]["VFIOD_DEVICE"] == "0000:06:00.0"
    assert sent[0]["VFIOD_OPERATION"] == "reset"
    assert sent[0]["SYSLOG_IDENTIFIER"] == "vfiod"
    assert sent[0]["PRIORITY"] == "4"  # syslog's warning
    stderr.close()


def test_a_process_name_with_escape_sequences_is_logged_escaped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    setup_logging()
    log.info("held by %s", "\x1b]0;pwned\x07 (pid 42)\nvfiod[info]: forged")
    assert err.getvalue() == ("vfiod[info]: held by \\x1b]0;pwned\\x07 (pid 42)"
                              "\\x0avfiod[info]: forged\n")
