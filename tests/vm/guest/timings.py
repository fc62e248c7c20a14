"""Measured times of the guest tests, for the test output and the tier's summary.

``record("nic host", "quit to devices back", 0.42)`` keeps a figure (seconds) under a
scenario; each call rewrites ``$VFIOD_VM_RESULTS/qemu-guest-times.json`` whole (so what
was measured survives a later failure), and conftest prints the table at the end of
the session. tests/vm/run.py shows the file in its summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: The file in the results folder the tier's runner reads.
FILE_NAME = "qemu-guest-times.json"

#: scenario -> figure -> seconds (a list for repeated steps).
Times = dict[str, dict[str, "float | list[float]"]]
TIMES: Times = {}


def record(scenario: str, figure: str, seconds: float | list[float]) -> None:
    """Keep one measured time (or a list of them) and write the file again."""
    TIMES.setdefault(scenario, {})[figure] = seconds
    results = os.environ.get("VFIOD_VM_RESULTS")
    if results:
        path = Path(results) / FILE_NAME
        path.write_text(json.dumps(TIMES, indent=1) + "\n")


def lines(times: Times | None = None) -> list[str]:
    """One line a scenario (of *times*, else of this run): its figures."""
    return [f"{scenario}: " + ", ".join(f"{figure} {shown(value)}"
                                         for figure, value in figures.items())
            for scenario, figures in (TIMES if times is None else times).items()]


def read(results: Path) -> Times:
    """The times a guest run left in its results folder ({} when it left none)."""
    try:
        times: Times = json.loads((results / FILE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return times


def shown(value: float | list[float]) -> str:
    """Seconds as text: 0.42 s, or 0.15/0.16/0.14 s for a list."""
    if isinstance(value, list):
        return "/".join(f"{v:.2f}" for v in value) + " s"
    return f"{value:.2f} s"
