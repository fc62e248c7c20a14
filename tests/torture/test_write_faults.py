"""Every errno, and a hang past the write timeout, at every host write of Bind, Unbind
and Reset of seed-x99's groups.

Each fault either fails the operation with one of vfiod's errors, the whole group put
back, or is got round (a fallback) and the operation finishes; a hang answers Timeout
and the engine finishes or rolls back by itself when the kernel returns. Counted, and
zero: misplaced devices, exceptions other than vfiod's errors, transactions left in the
journal, functions left busy.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.errors import Timeout, VfiodError
from vfiod.records import State

from engine.placement import KERNEL_ERRNOS

from .kill_plan import SOME, OPERATIONS, Machine, clean_writes, groups, prepare
from .report import Sizes, Summary

SCENARIO = "faults at host writes"
#: How long a hung write stays in the kernel, and how long the engine waits for it.
HANG, WRITE_TIMEOUT = 0.4, 0.1


def _errnos(which: str, device: str) -> list[int]:
    """Every errno for the short form's groups in the full form (a GPU with its audio,
    a single function), the errnos sysfs gives otherwise."""
    if which == "all" and device in SOME:
        return sorted(errno.errorcode)
    return list(KERNEL_ERRNOS)


class Trials:
    """One machine reused across faults: put back to its start after each."""

    def __init__(self, tmp: Path, device: str, operation: str) -> None:
        self.tmp, self.device, self.operation = tmp, device, operation
        self.made = 0
        self.machine = self._fresh()
        self.before = self.machine.everything()

    def _fresh(self) -> Machine:
        self.made += 1
        machine = prepare(self.tmp / f"m{self.made}", self.device, self.operation)
        #: The daemon's engine, kept across faults as a running daemon keeps it.
        self.engine = machine.engine
        return machine

    def settle(self, done: dict) -> bool:
        """After one fault: True when the machine was where it should be (then it is
        back at the start); otherwise it is replaced by a fresh one."""
        machine = self.machine
        now = machine.everything()
        engine = self.engine
        clean = (not engine.journal.unfinished()
                 and all(s.state is not State.BUSY for s in engine.status()))
        if now == done and now != self.before and clean:
            try:  # undo what finished, for the next fault
                if self.operation == "bind":
                    engine.unbind(self.device)
                elif self.operation == "unbind":
                    engine.bind(self.device, force=True)
                now = machine.everything()
            except VfiodError:
                pass
        if now == self.before and clean:
            return True
        machine.sim.close()
        self.machine = self._fresh()
        return now in (self.before, done) and clean

    def close(self) -> None:
        self.machine.sim.close()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_errno_at_every_write_fails_cleanly_or_finishes(
        tmp_path: Path, sizes: Sizes, summary: Summary, operation: str) -> None:
    faults = failed = got_round = 0
    misplaced: list[str] = []
    unexpected: list[str] = []
    for device in groups(sizes.kill_groups):
        steps, done, _ = clean_writes(tmp_path / f"count-{device}", device, operation)
        trials = Trials(tmp_path / device, device, operation)
        try:
            for step in range(steps):
                for err in _errnos(sizes.errnos, device):
                    sim = trials.machine.sim
                    sim.faults.fail_at(step, err)
                    faults += 1
                    try:
                        trials.machine.run(trials.engine)
                    except VfiodError:
                        failed += 1
                    except Exception as exc:  # noqa: BLE001 (counted: it must not happen)
                        unexpected.append(f"{device} {operation} write {step} "
                                          f"{errno.errorcode[err]}: {exc!r}")
                    else:
                        got_round += 1
                    finally:
                        sim.faults.clear()
                    if not trials.settle(done):
                        misplaced.append(f"{device} {operation} write {step} "
                                         f"{errno.errorcode[err]}")
        finally:
            trials.close()
    summary.add(SCENARIO, f"{operation}: errno faults injected "
                f"({'every errno' if sizes.errnos == 'all' else 'kernel errnos'})", faults)
    summary.add(SCENARIO, f"{operation}: failed with vfiod's error, group put back", failed)
    summary.add(SCENARIO, f"{operation}: got round by a fallback, finished", got_round)
    summary.add(SCENARIO, f"{operation}: exceptions other than vfiod's errors",
                len(unexpected), must_be_zero=True)
    summary.add(SCENARIO, f"{operation}: misplaced or unsettled after an errno",
                len(misplaced), must_be_zero=True)
    assert unexpected == [], unexpected[:5]
    assert misplaced == [], misplaced[:5]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_hang_at_every_write_answers_timeout_and_settles_by_itself(
        tmp_path: Path, sizes: Sizes, summary: Summary, operation: str) -> None:
    hangs = timeouts = 0
    misplaced: list[str] = []
    unexpected: list[str] = []
    for device in groups(sizes.kill_groups):
        _, done, paths = clean_writes(tmp_path / f"count-{device}", device, operation)
        trials = Trials(tmp_path / device, device, operation)
        try:
            for path in dict.fromkeys(p for p in paths if p.startswith("/sys/")):
                machine = trials.machine
                engine = Engine(machine.sim, machine.state, write_timeout=WRITE_TIMEOUT)
                finished = threading.Event()
                engine.set_listener(lambda _addresses: finished.set())
                machine.sim.faults.delay(path, HANG, times=1)
                hangs += 1
                try:
                    machine.run(engine)
                except Timeout:
                    timeouts += 1
                    if not finished.wait(HANG * 10):
                        unexpected.append(f"{device} {operation} {path}: never finished")
                except VfiodError:
                    pass
                except Exception as exc:  # noqa: BLE001 (counted: it must not happen)
                    unexpected.append(f"{device} {operation} {path}: {exc!r}")
                finally:
                    machine.sim.faults.clear()
                if not trials.settle(done):
                    misplaced.append(f"{device} {operation} hang at {path}")
        finally:
            trials.close()
    summary.add(SCENARIO, f"{operation}: hangs injected (each written path)", hangs)
    summary.add(SCENARIO, f"{operation}: of them answered Timeout", timeouts)
    summary.add(SCENARIO, f"{operation}: hangs never settled or other exceptions",
                len(unexpected), must_be_zero=True)
    summary.add(SCENARIO, f"{operation}: misplaced or busy after a hang", len(misplaced),
                must_be_zero=True)
    assert unexpected == [], unexpected[:5]
    assert misplaced == [], misplaced[:5]
