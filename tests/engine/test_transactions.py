"""Transactions: a failure at any step, or a kill, leaves every member where it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.errors import VfiodError
from vfiod.sim import SimHost

from vfiod.sim import SimulatedCrash

from .placement import KERNEL_ERRNOS, placement

GPU = "0000:06:00.0"
GROUP = ["0000:06:00.0", "0000:06:00.1"]


def _clean_run(tmp_path: Path, operation: str) -> tuple[int, dict]:
    """How many kernel writes a clean bind (or unbind after a bind) of the GPU makes,
    and where it leaves the group."""
    sim = SimHost(profile="seed-x99", desktop=False)
    try:
        engine = Engine(sim, tmp_path / "count-state")
        if operation == "unbind":
            engine.bind(GPU)
        before = len(sim.write_log)
        getattr(engine, operation)(GPU)
        return len(sim.write_log) - before, placement(sim, GROUP)
    finally:
        sim.close()


def _fresh(tmp_path: Path, name: str, operation: str) -> tuple[SimHost, Engine]:
    sim = SimHost(profile="seed-x99", desktop=False)
    engine = Engine(sim, tmp_path / f"{name}-state")
    if operation == "unbind":
        engine.bind(GPU)
    return sim, engine


@pytest.mark.parametrize("operation", ["bind", "unbind"])
def test_every_errno_at_every_step_ends_done_or_puts_the_whole_group_back(
        tmp_path: Path, operation: str) -> None:
    steps, done = _clean_run(tmp_path, operation)
    assert steps >= 6  # override, unbind, probe for each of the two functions
    failures = 0
    for step in range(steps):
        for err in KERNEL_ERRNOS:
            sim, engine = _fresh(tmp_path, f"{operation}-{step}-{err}", operation)
            try:
                before = placement(sim, GROUP)
                sim.faults.fail_at(step, err)
                try:
                    getattr(engine, operation)(GPU)
                except VfiodError as exc:
                    failures += 1
                    assert "put back" in str(exc)
                    assert placement(sim, GROUP) == before, (step, err)
                else:  # the step had a fallback (a direct bind, then drivers_probe)
                    assert placement(sim, GROUP) == done, (step, err)
                assert engine.journal.unfinished() == []
            finally:
                sim.close()
    assert failures >= steps  # most injected faults do fail the operation


@pytest.mark.parametrize("operation", ["bind", "unbind"])
@pytest.mark.parametrize("after", [False, True], ids=["before-write", "after-write"])
def test_killed_at_every_step_and_restarted_leaves_every_device_on_its_driver(
        tmp_path: Path, operation: str, after: bool) -> None:
    steps, _ = _clean_run(tmp_path, operation)
    for step in range(steps):
        name = f"{operation}-{after}-{step}"
        sim, engine = _fresh(tmp_path, name, operation)
        try:
            before = placement(sim, GROUP)
            if after:
                sim.faults.crash_after(step)
            else:
                sim.faults.crash_before(step)
            with pytest.raises(SimulatedCrash):
                getattr(engine, operation)(GPU)
            restarted = Engine(sim, tmp_path / f"{name}-state")
            touched = restarted.recover()
            assert sorted(touched) == GROUP
            assert placement(sim, GROUP) == before, step
            assert restarted.journal.unfinished() == []
        finally:
            sim.close()


def test_a_finished_transaction_leaves_no_journal(engine: Engine) -> None:
    engine.bind(GPU)
    assert engine.journal.unfinished() == []
    assert engine.recover() == []
