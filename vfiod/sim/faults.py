"""Fault injection for writes made through ``SimHost._write``.

Tests use it to make the kernel refuse a write (``fail``), to make a write slow
(``delay``), or to model the writing process being killed right before or right after
a given write (``crash_before`` / ``crash_after``), which raises SimulatedCrash.
Writes a user makes directly to the tree's files are not subject to faults.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass


class SimulatedCrash(BaseException):
    """The process "died" at this write: nothing after it may run (not an Exception)."""


@dataclass
class _Rule:
    glob: str
    remaining: int | None  # None: every matching write
    errno: int = 0
    seconds: float = 0.0

    def matches(self, paths: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(p, self.glob) for p in paths)


@dataclass(frozen=True)
class Verdict:
    """What the faults say about one write."""

    crash_before: bool = False
    crash_after: bool = False
    errno: int = 0
    delay: float = 0.0


class Faults:
    """The fault plan of one SimHost. Every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Rule] = []
        self._delays: list[_Rule] = []
        self._count = 0  # writes seen so far
        self._crash_before: int | None = None
        self._crash_after: int | None = None
        self._fail_at: dict[int, int] = {}  # write index -> errno

    def fail(self, path_glob: str, err: int, times: int = 1) -> None:
        """The next *times* writes to a host path matching *path_glob* fail with *err*."""
        with self._lock:
            self._failures.append(_Rule(path_glob, times, errno=err))

    def fail_at(self, n: int, err: int) -> None:
        """The *n*-th write from now (0-based) fails with *err*, whatever its path."""
        with self._lock:
            self._fail_at[self._count + n] = err

    def delay(self, path_glob: str, seconds: float, times: int | None = None) -> None:
        """Matching writes take *seconds* longer (every one, or the next *times*)."""
        with self._lock:
            self._delays.append(_Rule(path_glob, times, seconds=seconds))

    def crash_after(self, n: int) -> None:
        """The *n*-th write from now (0-based) completes, then raises SimulatedCrash."""
        with self._lock:
            self._crash_after = self._count + n

    def crash_before(self, n: int) -> None:
        """The *n*-th write from now (0-based) raises SimulatedCrash without effect."""
        with self._lock:
            self._crash_before = self._count + n

    def clear(self) -> None:
        """Forget every planned fault."""
        with self._lock:
            self._failures.clear()
            self._delays.clear()
            self._crash_before = self._crash_after = None
            self._fail_at.clear()

    def check(self, *paths: str) -> Verdict:
        """Count one write (given and resolved paths) and say what happens to it."""
        with self._lock:
            index = self._count
            self._count += 1
            if self._crash_before == index:
                self._crash_before = None
                return Verdict(crash_before=True)
            crash_after = self._crash_after == index
            if crash_after:
                self._crash_after = None
            err = self._take(self._failures, paths)
            errno = self._fail_at.pop(index, 0) or (err.errno if err else 0)
            delay = self._take(self._delays, paths)
            return Verdict(crash_after=crash_after,
                           errno=errno,
                           delay=delay.seconds if delay else 0.0)

    @staticmethod
    def _take(rules: list[_Rule], paths: tuple[str, ...]) -> _Rule | None:
        for rule in rules:
            if rule.matches(paths):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        rules.remove(rule)
                return rule
        return None
