"""Each device's health record in the engine: resets, quarantine, guest runs."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from vfiod.config import parse_config
from vfiod.device_records import ResetResult
from vfiod.engine import Engine
from vfiod.errors import Quarantined, ResetFailed
from vfiod.sim import SimHost
from vfiod.sim.holder import Holder

AUDIO = "0000:00:1b.0"  # onboard audio: flr, then pm; alone in group 9
GPU, GPU_AUDIO = "0000:06:00.0", "0000:06:00.1"  # group 31
USB = "0000:11:00.0"  # alone on its bus: pm, then bus


def kill_every_method(engine: Engine, host: SimHost, address: str) -> None:
    for method in engine.device_status(address).reset_methods:
        host.kernel.set_reset_outcome(address, method, "dies")


def fail_resets(engine: Engine, address: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ResetFailed):
            engine.reset(address)


def test_a_healthy_reset_is_recorded(engine: Engine) -> None:
    engine.bind(AUDIO)
    before = time.time_ns() // 1000
    engine.reset(AUDIO)
    status = engine.device_status(AUDIO)
    assert (status.reset_count, status.last_reset_method, status.last_reset_outcome) == \
        (1, "flr", "healthy")
    assert status.last_reset_time >= before
    assert status.consecutive_reset_failures == 0 and not status.quarantined


def test_a_failed_reset_is_recorded_with_the_rungs_it_tried_and_its_message(
        engine: Engine, host: SimHost) -> None:
    engine.bind(AUDIO)
    kill_every_method(engine, host, AUDIO)
    with pytest.raises(ResetFailed) as failed:
        engine.reset(AUDIO)
    climbed = engine.resetter.last_outcome(AUDIO)
    assert climbed is not None and len(climbed.rungs_tried) >= 2
    record = engine.records.get(AUDIO, engine.device_status(AUDIO).ids)
    assert record is not None and record.last_reset is not None
    last = record.last_reset
    assert (last.method, last.outcome, last.rungs, last.problem) == (
        "", "failed", len(climbed.rungs_tried), str(failed.value))


def test_three_failed_resets_in_a_row_quarantine_the_device(engine: Engine,
                                                            host: SimHost) -> None:
    engine.bind(AUDIO)
    kill_every_method(engine, host, AUDIO)
    fail_resets(engine, AUDIO, 2)
    assert engine.quarantine_reason(AUDIO) is None
    fail_resets(engine, AUDIO, 1)
    status = engine.device_status(AUDIO)
    assert status.quarantined and status.consecutive_reset_failures == 3

    with pytest.raises(Quarantined) as refused:
        engine.bind(AUDIO)
    message = str(refused.value)
    assert "last 3 reset(s) failed in a row" in message
    assert "config space reads all ones" in message
    assert f"vfioctl reset --clear {AUDIO}" in message


def test_bind_through_another_member_of_the_group_is_refused_too(engine: Engine) -> None:
    engine.records.record_reset(GPU, "10de:1b06", ResetResult(
        method="", rungs=0, healthy=False, problem="bus: it never came back"), 1)
    with pytest.raises(Quarantined, match=f"{GPU} is quarantined"):
        engine.bind(GPU_AUDIO)
    assert engine.device_status(GPU_AUDIO).driver == "snd_hda_intel"


def test_the_number_of_failures_is_configured(engine: Engine, host: SimHost) -> None:
    engine.set_config(parse_config("[daemon]\nquarantine_after = 1\n"))
    engine.bind(AUDIO)
    kill_every_method(engine, host, AUDIO)
    fail_resets(engine, AUDIO, 1)
    assert engine.quarantine_reason(AUDIO) is not None


def test_quarantine_after_zero_never_quarantines(engine: Engine, host: SimHost) -> None:
    engine.set_config(parse_config("[daemon]\nquarantine_after = 0\n"))
    engine.bind(AUDIO)
    kill_every_method(engine, host, AUDIO)
    fail_resets(engine, AUDIO, 5)
    assert engine.device_status(AUDIO).consecutive_reset_failures == 5
    assert engine.quarantine_reason(AUDIO) is None


def test_reset_with_clear_lifts_the_quarantine(engine: Engine, host: SimHost) -> None:
    engine.set_config(parse_config("[daemon]\nquarantine_after = 1\n"))
    engine.bind(USB)
    host.kernel.set_reset_outcome(USB, "pm", "dies")
    host.kernel.set_reset_outcome(USB, "bus", "enotty")
    host.faults.fail(f"*/{USB}/remove", errno.EIO)  # the ladder's last rung cannot run
    fail_resets(engine, USB, 1)
    assert engine.device_status(USB).quarantined
    host.kernel.set_reset_outcome(USB, "bus", "ok")  # what the user fixed
    assert engine.reset(USB, clear=True) == "bus"
    status = engine.device_status(USB)
    assert not status.quarantined and status.reset_count == 2
    assert status.last_reset_outcome == "healthy"
    assert engine.bind(USB) == []  # allowed again (it is on vfio-pci already)


def test_the_quarantine_outlives_a_reboot(engine: Engine, host: SimHost,
                                          tmp_path: Path) -> None:
    engine.set_config(parse_config("[daemon]\nquarantine_after = 1\n"))
    engine.bind(AUDIO)
    kill_every_method(engine, host, AUDIO)
    fail_resets(engine, AUDIO, 1)

    rebooted = SimHost(profile="seed-x99")  # another machine run: a new boot id
    try:
        assert rebooted.boot_id() != host.boot_id()
        after = Engine(rebooted, tmp_path / "state")
        assert after.device_status(AUDIO).quarantined
        with pytest.raises(Quarantined, match="reads all ones"):
            after.bind(AUDIO)
    finally:
        rebooted.close()


def wait_until_exited(holder: Holder, host: SimHost) -> None:
    """Until the holder is a zombie its parent (this test) has not reaped yet."""
    deadline = time.monotonic() + 10
    while host.exit_status(holder.pid) is None:
        assert time.monotonic() < deadline, "the holder did not exit"
        time.sleep(0.01)


def run_guest(engine: Engine, host: SimHost, end: signal.Signals) -> tuple[int, int, str]:
    engine.bind(AUDIO)
    holder = host.spawn_holder(["/dev/vfio/9"], comm="qemu-system-x86")
    engine.holders_changed()
    engine.observe_guests()
    assert engine.device_status(AUDIO).guest_runs[-1][1:] == (0, "running")
    os.kill(holder.pid, end)
    wait_until_exited(holder, host)
    engine.holders_changed()
    engine.observe_guests()
    holder.close()
    return engine.device_status(AUDIO).guest_runs[-1]


def test_a_guest_that_exits_cleanly_leaves_a_clean_run(engine: Engine,
                                                       host: SimHost) -> None:
    start, end, how = run_guest(engine, host, signal.SIGTERM)  # the holder exits 0
    assert how == "clean" and end >= start > 0
    run = engine.records.get(AUDIO, "8086:8d20").guest_runs[-1]  # type: ignore[union-attr]
    assert run.holder.startswith("qemu-system-x86 (pid ") and run.detail == "status 0"


def test_a_guest_killed_with_sigkill_leaves_a_killed_run(engine: Engine,
                                                         host: SimHost) -> None:
    start, end, how = run_guest(engine, host, signal.SIGKILL)
    assert how == "killed" and end >= start > 0
    run = engine.records.get(AUDIO, "8086:8d20").guest_runs[-1]  # type: ignore[union-attr]
    assert run.detail == "SIGKILL"


def test_resets_the_kernel_refuses_leave_no_record_and_never_quarantine(engine: Engine) -> None:
    # The GPU on its host driver: its only method is a bus reset the kernel refuses
    # (ENOTTY: its audio shares the bus), and no other rung may run. Nothing happened
    # to the card, so nothing counts towards a quarantine (found by the torture suite's
    # racing clients: the GPU ended quarantined).
    engine.set_config(parse_config("[daemon]\nquarantine_after = 1\n"))
    for _ in range(3):
        with pytest.raises(ResetFailed, match="ENOTTY"):
            engine.reset(GPU)
    status = engine.device_status(GPU)
    assert (status.reset_count, status.consecutive_reset_failures) == (0, 0)
    assert engine.quarantine_reason(GPU) is None
    assert engine.bind(GPU) == [GPU, GPU_AUDIO]
