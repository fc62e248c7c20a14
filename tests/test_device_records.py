"""The health record file: kept across restarts and boots, bounded, validated on load."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from pathlib import Path

import pytest

from vfiod.device_records import (
    MAX_GUEST_RUNS,
    RECORDS_FILE,
    DeviceRecords,
    Holding,
    ResetResult,
    classify_exit,
    outcome_of,
)
from vfiod.engine.reset import ResetOutcome
from vfiod.errors import ResetFailed

GPU, IDS = "0000:06:00.0", "10de:1b06"
FAILED = ResetResult(method="", rungs=0, healthy=False, problem="flr: the device did not "
                      "come back (config space reads all ones)")
HEALTHY = ResetResult(method="flr", rungs=1, healthy=True)


def boot() -> str:
    return str(uuid.uuid4())


def never_exited(pid: int) -> int | None:
    return None


def gone(pid: int) -> bool:
    return False


def test_a_record_is_read_back_by_the_next_boot(tmp_path: Path) -> None:
    records = DeviceRecords(tmp_path, boot())
    records.record_reset(GPU, IDS, HEALTHY, quarantine_after=3, when_us=1_000_000)
    records.record_reset(GPU, IDS, FAILED, quarantine_after=3, when_us=2_000_000)

    again = DeviceRecords(tmp_path, boot()).get(GPU, IDS)
    assert again is not None
    assert (again.reset_count, again.consecutive_failures) == (2, 1)
    assert again.last_reset is not None and again.last_reset.outcome == "failed"
    assert again.last_reset.time_us == 2_000_000


def test_another_card_in_the_same_slot_has_no_record(tmp_path: Path) -> None:
    records = DeviceRecords(tmp_path, boot())
    records.record_reset(GPU, IDS, FAILED, quarantine_after=1)
    assert records.quarantine_reason(GPU, IDS) is not None
    assert records.get(GPU, "1002:67df") is None
    assert records.quarantine_reason(GPU, "1002:67df") is None


def test_quarantine_comes_with_the_failures_in_a_row_only(tmp_path: Path) -> None:
    records = DeviceRecords(tmp_path, boot())
    for outcome in (FAILED, FAILED, HEALTHY, FAILED, FAILED):
        records.record_reset(GPU, IDS, outcome, quarantine_after=3)
    assert records.quarantine_reason(GPU, IDS) is None
    records.record_reset(GPU, IDS, FAILED, quarantine_after=3)
    reason = records.quarantine_reason(GPU, IDS)
    assert reason is not None and "last 3 reset(s) failed in a row" in reason
    assert "config space reads all ones" in reason and "vfioctl reset --clear" in reason


def test_clear_lifts_the_quarantine_and_forgets_the_failures(tmp_path: Path) -> None:
    records = DeviceRecords(tmp_path, boot())
    records.record_reset(GPU, IDS, FAILED, quarantine_after=1)
    assert records.clear(GPU, IDS)
    record = DeviceRecords(tmp_path, boot()).get(GPU, IDS)
    assert record is not None and not record.quarantined
    assert record.consecutive_failures == 0 and record.reset_count == 1


def test_a_damaged_file_is_moved_aside_and_reported(tmp_path: Path) -> None:
    (tmp_path / RECORDS_FILE).write_text('{"version": 1, "records": [')
    records = DeviceRecords(tmp_path, boot())
    assert records.all() == []
    assert records.problems and "moved aside" in records.problems[0]
    assert [p.name.split(".damaged-")[0] for p in tmp_path.iterdir()] == [RECORDS_FILE]


def test_a_record_whose_address_is_a_path_is_refused(tmp_path: Path) -> None:
    bad = {"version": 1, "records": [{"address": "../../etc/passwd", "ids": IDS}]}
    (tmp_path / RECORDS_FILE).write_text(json.dumps(bad))
    records = DeviceRecords(tmp_path, boot())
    assert records.all() == []
    assert "not a PCI address" in records.problems[0]


@pytest.mark.parametrize("ids", ["10DE:1B06", "10de-1b06", "10de:1b0", "10de:1b06 "])
def test_a_record_whose_ids_are_not_the_kernels_is_refused(tmp_path: Path, ids: str) -> None:
    bad = {"version": 1, "records": [{"address": GPU, "ids": ids}]}
    (tmp_path / RECORDS_FILE).write_text(json.dumps(bad))
    records = DeviceRecords(tmp_path, boot())
    assert records.all() == []
    assert "records.0.ids" in records.problems[0]
    assert "not vendor:device ids" in records.problems[0]


def test_guest_runs_keep_the_last_twenty(tmp_path: Path) -> None:
    records = DeviceRecords(tmp_path, boot())
    for n in range(MAX_GUEST_RUNS + 5):
        records.observe({GPU: Holding(IDS, 1000 + n, f"qemu (pid {1000 + n})")},
                        never_exited, gone, when_us=n * 10)
        records.observe({}, never_exited, gone, when_us=n * 10 + 5)
    runs = DeviceRecords(tmp_path, boot()).get(GPU, IDS).guest_runs  # type: ignore[union-attr]
    assert len(runs) == MAX_GUEST_RUNS
    assert runs[0].pid == 1005 and runs[-1].pid == 1000 + MAX_GUEST_RUNS + 4


def test_a_run_left_open_by_an_earlier_boot_ends_unknown(tmp_path: Path) -> None:
    DeviceRecords(tmp_path, boot()).observe({GPU: Holding(IDS, 4242, "qemu (pid 4242)")},
                                            never_exited, gone, when_us=100)
    # After a reboot pid 4242 holds the group again: another process, another run.
    records = DeviceRecords(tmp_path, boot())
    records.observe({GPU: Holding(IDS, 4242, "qemu (pid 4242)")}, never_exited,
                    lambda pid: True, when_us=200)
    runs = records.get(GPU, IDS).guest_runs  # type: ignore[union-attr]
    assert [(r.exit, r.detail) for r in runs] == [
        ("unknown", "the host rebooted meanwhile"), ("running", "")]


def test_an_exit_status_noted_at_the_pidfd_decides_how_the_run_ended(tmp_path: Path) -> None:
    records = DeviceRecords(tmp_path, boot())
    records.observe({GPU: Holding(IDS, 77, "qemu (pid 77)")}, never_exited, gone)
    records.note_exit(77, signal.SIGKILL)  # waitpid form: killed by SIGKILL
    records.observe({}, never_exited, gone)
    run = records.get(GPU, IDS).guest_runs[-1]  # type: ignore[union-attr]
    assert (run.exit, run.detail) == ("killed", "SIGKILL")
    assert run.end_us >= run.start_us > 0


@pytest.mark.parametrize(("status", "alive", "expected"), [
    (0, False, ("clean", "status 0")),
    (3 << 8, False, ("failed", "status 3")),
    (signal.SIGTERM, False, ("killed", "SIGTERM")),
    (None, True, ("clean", "let go while running")),
    (None, False, ("unknown", "exited; its status was reaped before vfiod could read it")),
])
def test_how_a_run_ended(status: int | None, alive: bool, expected: tuple[str, str]) -> None:
    assert classify_exit(status, alive) == expected


def climb(method: str, rungs_tried: tuple[str, ...], healthy: bool,
          problem: str = "") -> ResetOutcome:
    return ResetOutcome(GPU, method, rungs_tried, healthy, problem, seconds=0.1, at=0.0)


def test_a_healthy_outcome_whose_rungs_are_not_told_counts_none() -> None:
    assert outcome_of(climb("flr", (), True)) == ResetResult(method="flr", rungs=0,
                                                              healthy=True)


def test_a_failed_reset_is_a_failed_outcome_with_its_message() -> None:
    assert outcome_of(climb("", (), False, "its own words"), str(ResetFailed("flr: EIO"))) \
        == ResetResult(method="", rungs=0, healthy=False, problem="flr: EIO")
    assert outcome_of(climb("", ("flr",), False, "flr: EIO")) == ResetResult(
        method="", rungs=1, healthy=False, problem="flr: EIO")


def test_an_outcome_with_the_rungs_tried_counts_them() -> None:
    assert outcome_of(climb("bus", ("flr", "hot_reset"), True)) == \
        ResetResult(method="bus", rungs=2, healthy=True)


def test_a_save_syncing_to_disk_holds_up_neither_note_exit_nor_readers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """note_exit runs on the daemon's event loop: a worker thread's save, waiting for
    the disk, must not stall it (nor readers); the newest state still ends on disk."""
    from vfiod import device_records

    records = DeviceRecords(tmp_path, boot())
    writing, release = threading.Event(), threading.Event()
    real_write = device_records.atomic_write

    def slow_write(path: Path, data: str) -> None:
        if not writing.is_set():
            writing.set()
            assert release.wait(10)
        real_write(path, data)

    monkeypatch.setattr(device_records, "atomic_write", slow_write)
    first = threading.Thread(target=records.record_reset, args=(GPU, IDS, FAILED, 0))
    second = threading.Thread(target=records.record_reset, args=(GPU, IDS, HEALTHY, 0))
    try:
        first.start()
        assert writing.wait(10)
        second.start()  # waits for the first write, not holding the records' lock
        loop = threading.Thread(target=lambda: (records.note_exit(77, 0),
                                                records.get(GPU, IDS), records.all()))
        loop.start()
        loop.join(2)
        assert not loop.is_alive(), "note_exit or a reader waited for the disk"
    finally:
        release.set()
        first.join(10)
        second.join(10)
    on_disk = DeviceRecords(tmp_path, boot()).get(GPU, IDS)
    assert on_disk is not None and on_disk.reset_count == 2
    assert [r.outcome for r in on_disk.resets] == ["failed", "healthy"]
