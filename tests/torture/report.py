"""The torture suite's sizes (short or full) and its one summary table per run.

``VFIOD_TORTURE=full`` (what ``make torture`` sets) picks the full sizes; anything else
the short form that ``make test`` runs. Each scenario records its counts with
``Summary.add``; at the end of the session the table is printed and written to
``build/torture-<form>.json`` and ``.md`` (``VFIOD_TORTURE_REPORT`` names another
directory).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENV = "VFIOD_TORTURE"
REPORT_ENV = "VFIOD_TORTURE_REPORT"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sizes:
    """How hard each scenario pushes."""

    form: str
    dbus_calls: int          # malformed D-Bus calls
    clients: int             # concurrent clients
    race_seconds: float      # how long they race
    kill_groups: str         # "some" or "all" groups of seed-x99 for kill points
    random_kills: int        # kills at random times of a real daemon
    errnos: str              # "kernel" (the errnos sysfs gives) or "all" (every errno)
    storm_events: int        # uevent adds plus removes
    xml_copies: int          # how large the huge hostile domain XML is


SHORT = Sizes("short", dbus_calls=2_000, clients=12, race_seconds=12, kill_groups="some",
              random_kills=1, errnos="kernel", storm_events=192, xml_copies=2_000)
FULL = Sizes("full", dbus_calls=20_000, clients=50, race_seconds=60, kill_groups="all",
             random_kills=12, errnos="all", storm_events=4_096, xml_copies=20_000)


def sizes() -> Sizes:
    """The sizes this run uses."""
    return FULL if os.environ.get(ENV, "").strip().lower() == "full" else SHORT


@dataclass
class Row:
    """One count of one scenario: what was counted, how many, and what it must be."""

    scenario: str
    count: str
    value: float | int | str
    expected: str = ""  # "0" when it must be zero; "" for a plain figure

    @property
    def ok(self) -> bool:
        """A count that must be zero is zero."""
        return self.expected != "0" or self.value == 0


@dataclass
class Summary:
    """Every scenario's counts in one table."""

    form: str
    started: float = field(default_factory=time.time)
    rows: list[Row] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, scenario: str, count: str, value: float | int | str,
            must_be_zero: bool = False) -> None:
        """Record one figure (and whether it must be zero); the files are rewritten at
        once, so an interrupted run keeps what it counted."""
        with self._lock:
            self.rows.append(Row(scenario, count, value, "0" if must_be_zero else ""))
        self.write()

    def markdown(self) -> str:
        """The table as Markdown."""
        lines = [f"Torture suite, {self.form} form, "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.started))}, "
                 f"{time.time() - self.started:.0f} s",
                 "", "| scenario | count | value | must be |", "| --- | --- | ---: | --- |"]
        for row in self.rows:
            value = f"{row.value:,}" if isinstance(row.value, int) else (
                f"{row.value:.1f}" if isinstance(row.value, float) else row.value)
            mark = "" if row.ok else " **FAILED**"
            lines.append(f"| {row.scenario} | {row.count} | {value}{mark} | {row.expected} |")
        return "\n".join(lines) + "\n"

    def write(self) -> Path | None:
        """Write the table as JSON and Markdown; the Markdown file's path."""
        if not self.rows:
            return None
        directory = Path(os.environ.get(REPORT_ENV) or REPO / "build")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            base = directory / f"torture-{self.form}"
            base.with_suffix(".json").write_text(json.dumps(
                {"form": self.form, "started": self.started,
                 "seconds": round(time.time() - self.started, 1),
                 "rows": [asdict(r) for r in self.rows]}, indent=1) + "\n")
            base.with_suffix(".md").write_text(self.markdown())
        except OSError:
            return None
        return base.with_suffix(".md")
