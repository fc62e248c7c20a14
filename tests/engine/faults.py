"""Test helpers: make the n-th kernel write fail, or kill the process around it."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from vfiod.host.base import Host
from vfiod.model import is_vfio_driver


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the engine may catch it or clean up after it."""


def _wrap(host: Host, at: Callable[[int, str, str, Callable[[str, str], None]], None]) -> None:
    real = host._write
    calls = {"n": 0}

    def write(path: str, value: str) -> None:
        n = calls["n"]
        calls["n"] += 1
        at(n, path, value, real)

    host._write = write  # type: ignore[method-assign]


def fail_write(host: Host, index: int, err: int) -> None:
    """The index-th write from now fails with *err* and has no effect."""
    def at(n: int, path: str, value: str, real: Callable[[str, str], None]) -> None:
        if n == index:
            raise OSError(err, os.strerror(err), path)
        real(path, value)
    _wrap(host, at)


def kill_at(host: Host, index: int, *, after: bool) -> None:
    """The process dies just before (or just after) the index-th write from now."""
    def at(n: int, path: str, value: str, real: Callable[[str, str], None]) -> None:
        if n == index and not after:
            raise Killed(f"killed before writing {path}")
        real(path, value)
        if n == index and after:
            raise Killed(f"killed after writing {path}")
    _wrap(host, at)


def count_writes(host: Host) -> list[tuple[str, str]]:
    """Record every write from now (and let it through)."""
    seen: list[tuple[str, str]] = []

    def at(n: int, path: str, value: str, real: Callable[[str, str], None]) -> None:
        seen.append((path, value))
        real(path, value)
    _wrap(host, at)
    return seen


def driver_of(host: Host, address: str) -> str | None:
    """The driver the kernel shows for a device right now."""
    return host.link_name(f"/sys/bus/pci/devices/{address}/driver")


def override_of(host: Host, address: str) -> str | None:
    """driver_override as the kernel shows it, None for "(null)"."""
    text = host.read_text(f"/sys/bus/pci/devices/{address}/driver_override")
    return None if text in (None, "", "(null)") else text


def placement(host: Host, addresses: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """(driver, driver_override) of each device."""
    return {a: (driver_of(host, a), override_of(host, a)) for a in addresses}


#: The errno values kernel-facts.md records for bad writes, plus a generic I/O error.
KERNEL_ERRNOS = (errno.ENODEV, errno.ENOENT, errno.EBUSY, errno.EINVAL, errno.EIO)

__all__ = ["KERNEL_ERRNOS", "Killed", "count_writes", "driver_of", "fail_write",
           "is_vfio_driver", "kill_at", "override_of", "placement"]
