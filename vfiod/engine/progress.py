"""What a running operation tells its caller: the step it is in, what it waits for, and
the safe points where it may be cancelled.

The daemon runs every Bind, Unbind and Reset as a job and shows its Phase and WaitingFor
(vfiod.daemon.jobs). The engine stays plain synchronous code: ``Engine.run`` takes a
``progress`` callable and a ``cancelled`` check and installs them for the operation's
thread (a context variable), and the steps below report through the module functions
here, so that no engine signature deep down has to carry them. Without a tracker
installed (tests, the background finisher of a stalled write) every call is a no-op.

- ``step(phase)``: a new step, in words a user understands ("unbinding 0000:06:00.0
  from nvidia"). It is also a safe point: when the caller asked to cancel, it raises
  Cancelled, which the transaction rolls back as it does any failure.
- ``kernel_write(what)``: around one kernel write. WaitingFor names the write while it
  is in the kernel; a write cannot be interrupted, so the caller refuses to cancel
  then (``in_kernel`` is passed to progress).
- ``rolling_back()``: no safe points while the devices are being put back.
- ``wait_for_holders(check, what)``: the optional bounded wait (the ``wait`` option) for
  a process to let go of a device, instead of refusing at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, TypeVar

from vfiod.errors import Failed, InUse

__all__ = ["Cancelled", "Progress", "kernel_write", "reporting", "rolling_back", "step",
           "wait_for_holders"]

#: How often a wait for a holder looks again (a /proc scan or a group open each time).
HOLDER_RECHECK = 0.25

_T = TypeVar("_T")


class Progress(Protocol):
    """The caller's hook: called (on the operation's thread) at each step."""

    def __call__(self, phase: str, waiting_for: str = "", *, in_kernel: bool = False) -> None:
        """*phase*: the step; *waiting_for*: the process or kernel write it waits on
        ("" for none); *in_kernel*: a kernel write is under way (it cannot be cancelled)."""


class Cancelled(Failed):
    """The caller cancelled the operation; it stopped at a safe step."""


@dataclass
class _Tracker:
    progress: Progress | None
    cancelled: Callable[[], bool] | None
    wait: float
    phase: str = ""
    rolling_back: bool = False

    def report(self, waiting_for: str = "", in_kernel: bool = False) -> None:
        if self.progress is not None:
            self.progress(self.phase, waiting_for, in_kernel=in_kernel)

    def check(self) -> None:
        if not self.rolling_back and self.cancelled is not None and self.cancelled():
            raise Cancelled(f"cancelled while {self.phase or 'starting'}")


_current: ContextVar[_Tracker | None] = ContextVar("vfiod_engine_progress", default=None)


@contextlib.contextmanager
def reporting(progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
              wait: float = 0.0) -> Iterator[None]:
    """Install *progress* and *cancelled* for the operation run inside the block (this
    thread); *wait*: how long to wait for a holder to let go before refusing (0: refuse
    at once)."""
    token = _current.set(_Tracker(progress, cancelled, max(0.0, wait)))
    try:
        yield
    finally:
        _current.reset(token)


def step(phase: str, waiting_for: str = "") -> None:
    """Enter a step (reported as the Phase); a safe point: Cancelled when asked to stop."""
    tracker = _current.get()
    if tracker is None:
        return
    tracker.check()
    if phase == tracker.phase and not waiting_for:
        return  # the same step again (a plan rebuilt while waiting): keep what it waits for
    tracker.phase = phase
    tracker.report(waiting_for)


@contextlib.contextmanager
def kernel_write(what: str) -> Iterator[None]:
    """Around one kernel write: WaitingFor names it until the kernel returns."""
    tracker = _current.get()
    if tracker is None:
        yield
        return
    tracker.report(f"the kernel: {what}", in_kernel=True)
    try:
        yield
    finally:
        tracker.report()


@contextlib.contextmanager
def rolling_back() -> Iterator[None]:
    """Putting devices back: reported as such, and never cancelled half-way."""
    tracker = _current.get()
    if tracker is None:
        yield
        return
    before = tracker.rolling_back
    tracker.rolling_back = True
    tracker.phase = "rolling back"
    tracker.report()
    try:
        yield
    finally:
        tracker.rolling_back = before


def wait_for_holders(check: Callable[[], _T], holders: Callable[[InUse], str]) -> _T:
    """Run *check* (which raises InUse while something holds the device) until it passes.

    Without a ``wait`` budget the first InUse is raised as it is. With one, a soft InUse
    is waited out: the phase stays the step's and WaitingFor is ``holders(err)`` (``qemu-system-x86
    (pid 4242) to release 0000:06:00.0``), checked again every HOLDER_RECHECK seconds; a
    hard one (a mounted disk) is raised at once. Cancel stops the wait at once.
    """
    tracker = _current.get()
    budget = tracker.wait if tracker is not None else 0.0
    deadline = time.monotonic() + budget
    while True:
        try:
            return check()
        except InUse as err:
            if err.hard or tracker is None or time.monotonic() >= deadline:
                if budget and not err.hard:
                    raise InUse(f"{err} (waited {budget:g} s for it to be let go)") from None
                raise
            tracker.check()
            tracker.report(holders(err))  # the phase stays: the step waits
            time.sleep(min(HOLDER_RECHECK, max(0.0, deadline - time.monotonic())))
