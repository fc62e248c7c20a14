"""SIGKILL at every host write of Bind, Unbind and Reset of every group of seed-x99,
again at every write of the recovery that follows, and at random times of a real daemon.

In-process kills use the simulated kernel's crash points (the same SimulatedCrash the
transaction tests use, tests/engine/test_transactions.py, there for one group): the
write happens or not, then nothing of the process runs any more. A restarted engine
recovers; every function of the machine must be where it was before the operation or
where the finished operation puts it. The real daemon is killed by the launcher's
crash knob (os._exit at a write) and by SIGKILL at a random moment.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vfiod.errors import VfiodError
from vfiod.sim import SimulatedCrash

from integration.helpers import Vfiod, knobs, sim_driver, wait_for

from .kill_plan import OPERATIONS, Machine, Placement, clean_writes, groups, prepare
from .report import Sizes, Summary

SCENARIO = "SIGKILL at host writes"


def _misplaced(now: Placement, before: Placement, done: Placement) -> list[str]:
    """Functions that are neither where they were nor where the operation puts them,
    or a group that is half one, half the other."""
    if now == before or now == done:
        return []
    return sorted(a for a in now if now[a] != before[a])


def _kill_and_recover(machine: Machine, step: int, after: bool, before: Placement,
                      done: Placement) -> tuple[int, list[str]] | None:
    """Kill the operation at one write, then kill each recovery at its 1st, 2nd, ...
    write until one finishes. (kill points used, misplaced functions); None when the
    operation made fewer writes than *step*."""
    sim = machine.sim
    (sim.faults.crash_after if after else sim.faults.crash_before)(step)
    points = 1
    try:
        machine.run()
    except SimulatedCrash:
        pass
    except VfiodError:
        return None  # this group is refused before any write: nothing to kill
    else:
        return None
    finally:
        sim.faults.clear()
    for recovery_step in range(64):
        sim.faults.crash_before(recovery_step) if after else sim.faults.crash_after(recovery_step)
        try:
            machine.engine.recover()
        except SimulatedCrash:
            points += 1
            continue
        finally:
            sim.faults.clear()
        break
    else:
        raise AssertionError("recovery never finished")
    machine.engine.recover()  # nothing left: a no-op
    assert machine.engine.journal.unfinished() == []
    return points, _misplaced(machine.everything(), before, done)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_kill_at_every_write_and_in_recovery_misplaces_no_device(
        tmp_path: Path, sizes: Sizes, summary: Summary, operation: str) -> None:
    points = 0
    misplaced: list[str] = []
    for device in groups(sizes.kill_groups):
        _, done, _ = clean_writes(tmp_path / f"count-{device}", device, operation)
        for after in (False, True):
            # One machine, as a real one outlives the daemon: after each kill and
            # recovery it is where it started, ready for the next kill point.
            machine = prepare(tmp_path / f"{device}-{after}", device, operation)
            before = machine.everything()
            try:
                for step in range(64):  # until the operation has no write left to kill at
                    result = _kill_and_recover(machine, step, after, before, done)
                    if result is None:
                        break
                    used, wrong = result
                    points += used
                    misplaced += [f"{device} {operation} write {step} "
                                  f"{'after' if after else 'before'}: {a}" for a in wrong]
                    if machine.everything() != before:  # rolled forward or misplaced
                        machine.sim.close()
                        machine = prepare(tmp_path / f"{device}-{after}-{step}", device,
                                          operation)
            finally:
                machine.sim.close()
    summary.add(SCENARIO, f"{operation}: kill points (operation and recovery)", points)
    summary.add(SCENARIO, f"{operation}: misplaced devices", len(misplaced), must_be_zero=True)
    assert misplaced == []
    assert points > 0


GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"
RANDOM_TARGETS = ["0000:06:00.0", "0000:09:00.0", "0000:00:1b.0", "0000:11:00.0"]


def _drivers(sim_root: Path, addresses: list[str]) -> dict[str, str]:
    return {a: sim_driver(sim_root, a) for a in addresses}


def test_a_real_daemon_killed_at_random_times_misplaces_no_device(
        make_vfiod: Callable[..., Vfiod], sizes: Sizes, summary: Summary) -> None:
    rng = random.Random(sizes.random_kills)
    watched = ["0000:06:00.0", "0000:06:00.1", "0000:09:00.0", "0000:09:00.1",
               "0000:00:1b.0", "0000:11:00.0"]
    daemon = make_vfiod()
    kills = misplaced = 0
    host = _drivers(daemon.sim_root, watched)  # the profile's host drivers
    for n in range(sizes.random_kills):
        device = rng.choice(RANDOM_TARGETS)
        group = [a for a in watched if a[:-1] == device[:-1]]
        # Slow writes, so that a kill at a random moment lands inside the operation.
        daemon.start(**knobs(delay=[{"path": "*", "seconds": 0.05}]))
        before = _drivers(daemon.sim_root, watched)
        member = "Unbind" if sim_driver(daemon.sim_root, device) == "vfio-pci" else "Bind"
        call = subprocess.Popen(["busctl", f"--address={daemon.address}", "call",
                                 "org.vfiod1", "/org/vfiod1", "org.vfiod1.Manager", member,
                                 "sa{sv}", device, "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(rng.uniform(0.0, 0.5))
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait()
            kills += 1
        finally:
            call.wait(30)
        daemon.start()  # no knobs: recovery at full speed
        wait_for(lambda: daemon.status(), 30, "vfiod answering after the restart")
        after = _drivers(daemon.sim_root, watched)
        # The whole group where it was, or where the finished call puts it.
        whole = (all(after[a] == before[a] for a in group)
                 or all(after[a] == "vfio-pci" for a in group) and member == "Bind"
                 or all(after[a] == host[a] for a in group) and member == "Unbind")
        others_kept = all(after[a] == before[a] for a in watched if a not in group)
        if not (whole and others_kept) or list(daemon.state_dir.glob("txn-*.json")):
            misplaced += 1
            print(f"misplaced after a kill during {member} {device}: {before} -> {after}")
        daemon.stop()
    summary.add(SCENARIO, "real daemon: SIGKILL at random times", kills)
    summary.add(SCENARIO, "real daemon: misplaced groups after restart", misplaced,
                must_be_zero=True)
    assert misplaced == 0
