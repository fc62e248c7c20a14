"""What the simulated machine holds, to tell whether anything wrote to it, and what a
client may be told."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from vfiod.errors import ALL_ERRORS

#: Files of the simulated host's own bookkeeping, which change without a host write.
_BOOKKEEPING = (".sim-lock", ".sim-watch")


def fingerprint(root: Path) -> dict[str, str]:
    """A digest of every file (its contents and mode) and every link target under *root*."""
    out: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            if rel.split(os.sep, 1)[0] in _BOOKKEEPING:
                continue
            try:
                st = os.lstat(path)
                if os.path.islink(path):
                    out[rel] = "-> " + os.readlink(path)
                elif os.path.isfile(path):
                    with open(path, "rb") as f:
                        out[rel] = f"{st.st_mode:o} " + hashlib.sha256(f.read()).hexdigest()
                else:
                    out[rel] = f"{st.st_mode:o}"
            except OSError:
                out[rel] = "vanished"
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The paths whose digest differs (added, removed or rewritten)."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


#: vfiod's own error names (vfiod/errors.py).
DOCUMENTED_ERROR_NAMES = frozenset(cls.dbus_name for cls in ALL_ERRORS)


def documented(error_name: str | None) -> bool:
    """An error name a client may see: vfiod's own, or the bus's and library's standard ones."""
    if error_name is None:
        return False
    return (error_name in DOCUMENTED_ERROR_NAMES
            or error_name.startswith("org.freedesktop.DBus.Error."))


# A source path is "/vfiod/engine/plan.py", not any path with a vfiod folder in it: the
# bus's own AccessDenied names the caller's command line, which is "/srv/vfiod/.venv/..."
# when the checkout is /srv/vfiod (as in `make test-minbase`).
_INTERNAL = re.compile(r"Traceback|File \"|object at 0x|internal error|Exception\b|"
                       r"NoneType|KeyError|AttributeError|TypeError|ValueError|"
                       r"RuntimeError|RecursionError|pydantic|dbus_fast|/vfiod/[\w/]*\.py")


def internal_text(text: str) -> bool:
    """True when a message carries a traceback or the implementation's insides."""
    return bool(_INTERNAL.search(text))

