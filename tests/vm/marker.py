"""The kernel command-line marker that tells the test guest from any other machine.

Every guest-side script (the guest conftest, init.sh) refuses to run without it: they
unbind, reset and power off, which must never happen on a host.
"""

from __future__ import annotations

GUEST_MARKER = "vfiod.testguest=1"


def in_test_guest(cmdline_path: str = "/proc/cmdline") -> bool:
    """True when the running kernel was booted with the test-guest marker."""
    try:
        with open(cmdline_path, encoding="utf-8", errors="replace") as f:
            words = f.read().split()
    except OSError:
        return False
    return GUEST_MARKER in words
