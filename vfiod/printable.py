"""Text from the machine made safe to print: control characters shown escaped.

A process name, a device name from the udev database, a holder or an error text comes
from whoever controls the machine's files and processes; a process named
``\\x1b]0;pwned\\x07`` would otherwise rewrite the terminal of whoever runs ``vfioctl
status`` or reads the log. Every such string goes through :func:`printable` before it
is printed, exported over D-Bus or logged.
"""

from __future__ import annotations

import re

# C0 (newline and tab included: one field, one line), DEL, C1 (0x9b is CSI on 8-bit
# terminals), the line and paragraph separators, and the bidirectional overrides and
# isolates that reorder what a terminal shows ("Trojan source").
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """*text* with every control character written as an escape (``\\x1b``, ``\\u202e``).

    Printable text, non-ASCII letters included, is returned unchanged (the same object).
    """
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)
