"""Times as vfiod shows them to people: one function, with no import beyond the
standard library (vfioctl status uses it and must start fast, without pydantic)."""

from __future__ import annotations

import time


def utc_time(us: int) -> str:
    """``2026-12-05 06:01:02 UTC`` from µs since the epoch (as D-Bus ``t`` times are
    given)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(us / 1e6))
