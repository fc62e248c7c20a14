"""How the kernel parses what userspace writes to sysfs, reproduced exactly.

The errno a bad write gets depends on these details (``0000:06:00.0\\n`` names a device,
``06:00.0`` does not; ``0x1`` is a valid ``reset`` value, `` 1`` is not).
"""

from __future__ import annotations

import errno
import re

_HEX_FIELD = re.compile(r"\s*(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)")


def c_string(value: str) -> str:
    """What a C string handler sees of a buffer: everything before the first NUL."""
    return value.split("\0", 1)[0]


def sysfs_streq(s1: str, s2: str) -> bool:
    """lib/string.c sysfs_streq: equal, but a single trailing newline on either is ignored."""
    s1, s2 = c_string(s1), c_string(s2)
    i = 0
    while i < len(s1) and i < len(s2) and s1[i] == s2[i]:
        i += 1
    rest1, rest2 = s1[i:], s2[i:]
    return (rest1 == rest2) or (rest1 == "" and rest2 == "\n") or (rest1 == "\n" and rest2 == "")


def kstrtoul(value: str, base: int = 0) -> int:
    """lib/kstrtox.c kstrtoul: one unsigned number, one optional trailing newline.

    Raises OSError(EINVAL) for anything else (leading blanks, trailing junk, empty) and
    OSError(ERANGE) above 64 bits.
    """
    s = c_string(value)
    if s.startswith("+"):
        s = s[1:]
    if base == 0:
        if s[:2].lower() == "0x" and len(s) > 2 and s[2] in "0123456789abcdefABCDEF":
            base, s = 16, s[2:]
        elif s.startswith("0"):
            base = 8
        else:
            base = 10
    elif base == 16 and s[:2].lower() == "0x":
        s = s[2:]
    if s.endswith("\n"):
        s = s[:-1]
    digits = "0123456789abcdef"[:base]
    if not s or any(ch not in digits for ch in s.lower()):
        raise OSError(errno.EINVAL, "Invalid argument")
    number = int(s, base)
    if number >= 1 << 64:
        raise OSError(errno.ERANGE, "Numerical result out of range")
    return number


def sscanf_hex(value: str, fields: int) -> list[int]:
    """The fields ``sscanf(buf, "%x %x ...")`` converts before the first mismatch."""
    s = c_string(value)
    found: list[int] = []
    pos = 0
    while len(found) < fields:
        m = _HEX_FIELD.match(s, pos)
        if m is None:
            break
        found.append(int(m.group(1), 16) & 0xFFFFFFFF)
        pos = m.end()
    return found


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def synth_uevent(value: str, actions: tuple[str, ...]) -> tuple[str, dict[str, str]] | None:
    """A write to a device's ``uevent`` file as lib/kobject_uevent.c reads it
    (kobject_synth_uevent): the action and the variables the event gets, or None for
    EINVAL.

    ``ACTION`` alone (a trailing newline is ignored) gives ``SYNTH_UUID=0``;
    ``ACTION UUID [KEY=VALUE ...]`` gives ``SYNTH_UUID=UUID`` and a ``SYNTH_ARG_KEY=VALUE``
    per pair, separated by single blanks.
    """
    text = c_string(value)
    if text.endswith("\n"):
        text = text[:-1]
    action, blank, args = text.partition(" ")
    if action not in actions:
        return None
    if not blank:
        return action, {"SYNTH_UUID": "0"}
    if not _UUID.match(args):
        return None
    found = {"SYNTH_UUID": args[:36]}
    rest = args[36:]
    while rest:
        m = re.match(r" ([^ =]+)=([^ ]+)", rest)
        if m is None:
            return None
        found[f"SYNTH_ARG_{m.group(1)}"] = m.group(2)
        rest = rest[m.end():]
    return action, found
