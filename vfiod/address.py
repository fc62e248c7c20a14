"""PCI addresses and the device arguments users type.

A device argument is a full address (``0000:06:00.0``), a short one (``06:00.0``) or a
name from the config file. Everything here is pure: an argument is checked before
any I/O, so a malformed one (``../../x``, a 10 kB string) never reaches the host.
"""

from __future__ import annotations

import re

from vfiod.errors import InvalidArgument

_FULL = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$")
_SHORT = re.compile(r"^([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$")
# Config names: short, printable, never path-like.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_IDS = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{4})$")

MAX_ARGUMENT = 128


def normalize_address(text: str) -> str | None:
    """Return the full lower-case address for a full or short one, else None."""
    if not isinstance(text, str) or len(text) > 16:
        return None
    low = text.lower()
    if (m := _FULL.fullmatch(low)) is not None:
        return low
    if (m := _SHORT.fullmatch(low)) is not None:
        return f"0000:{m.group(1)}:{m.group(2)}.{m.group(3)}"
    return None


def is_address(text: str) -> bool:
    """True when *text* is a full PCI address as the kernel writes it."""
    return isinstance(text, str) and _FULL.fullmatch(text) is not None


def is_name(text: str) -> bool:
    """True when *text* could be a device name from the config file."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


def is_ids(text: str) -> bool:
    """True when *text* is ``vvvv:dddd`` ids as the kernel writes them (lower case)."""
    return isinstance(text, str) and _IDS.fullmatch(text) is not None


def parse_ids(text: str) -> tuple[int, int] | None:
    """Parse ``vvvv:dddd`` into (vendor, device), or None."""
    m = _IDS.fullmatch(text.lower()) if isinstance(text, str) else None
    return (int(m.group(1), 16), int(m.group(2), 16)) if m else None


def check_device_argument(text: object) -> str:
    """Validate a device argument without touching the host.

    Returns the full address for an address, or the name unchanged for a config name.
    Raises InvalidArgument for anything else, quoting at most a short prefix of it.
    """
    if not isinstance(text, str) or not text:
        raise InvalidArgument("a device is needed: a PCI address such as 0000:06:00.0, "
                              "06:00.0, or a name from the config file")
    if len(text) <= MAX_ARGUMENT:
        address = normalize_address(text)
        if address is not None:
            return address
        if is_name(text):
            return text
    escaped = text[:40].encode("unicode_escape").decode("ascii")
    shown = escaped[:48]
    more = "…" if len(text) > 40 or len(escaped) > 48 else ""
    raise InvalidArgument(
        f"{shown!r}{more} is not a device: expected a PCI address such as 0000:06:00.0 "
        "or 06:00.0, or a name from the config file"
    )


def bus_of(address: str) -> str:
    """``0000:06:00.1`` -> ``0000:06`` (the bus a secondary bus reset acts on)."""
    return address.rsplit(":", 1)[0]
