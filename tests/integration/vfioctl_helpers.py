"""Running the real ``vfioctl`` binary against a test's vfiod, for test_vfioctl_*.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from vfiod.address import is_address

from .helpers import NOBODY

#: The installed entry point next to this Python (what a user runs).
VFIOCTL = Path(sys.executable).parent / "vfioctl"

#: Every exit status vfioctl documents.
DOCUMENTED_CODES = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 130})


def vfioctl_argv(address: str | None, *args: str) -> list[str]:
    """The command line of vfioctl on the bus at *address* (none: the environment's)."""
    command = [str(VFIOCTL)] if VFIOCTL.exists() else [sys.executable, "-m", "vfiod.ctl"]
    bus = ["--address", address] if address else []
    return [*command, *bus, *args]


def vfioctl(address: str | None, *args: str, user: str = "root",
            env: Mapping[str, str] | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run vfioctl to completion (as root, or as nobody with uid 65534)."""
    prefix = NOBODY if user == "nobody" else []
    full_env = {**os.environ, **(env or {})}
    full_env.pop("VFIOCTL_DEBUG", None)
    if not env or "COLUMNS" not in env:
        full_env.pop("COLUMNS", None)  # a terminal's width would shorten the table
    return subprocess.run([*prefix, *vfioctl_argv(address, *args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, check=False)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``vfioctl: ...`` line a failed command printed, checked to be alone."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vfioctl: "), lines[0]
    return lines[0]


def table_rows(output: str) -> dict[str, list[str]]:
    """The status table's device rows by address, as their cells (split at gaps of two
    or more blanks)."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("  ") and is_address(line.split()[0]):
            cells = [c.strip() for c in line.strip().split("  ") if c.strip()]
            rows[cells[0]] = cells
    return rows
