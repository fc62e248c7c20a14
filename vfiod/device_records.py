"""Each device's health record: its resets, its guest runs, and its quarantine.

One record per PCI function, keyed by its address *and* its ids (``10de:1b06``), never
by an IOMMU group number (a rescan or a reboot may renumber groups): a different card
in the same slot starts a record of its own. The records live in the state directory
as ``device-records.json`` and, unlike the journal, are not bound to the boot: how a
card fared is worth knowing across reboots. The file is written atomically after
every change and is bounded (the last MAX_GUEST_RUNS guest runs and MAX_RESETS reset
attempts per device, at most MAX_RECORDS devices). On load it passes the validators
before anything is trusted; a damaged file is moved aside and reported, as the
journal does.

A device whose resets failed ``quarantine_after`` times in a row is quarantined: Bind
refuses it, with its history, until the user clears it (``Reset`` with ``clear``).

How a guest run ended: the holder's pidfd says *that* it exited, not how (only its
parent may wait for it). vfiod reads the exit status the kernel keeps for a process
that exited and was not yet reaped (``/proc/PID/stat``'s exit_code, in waitpid's form):
``killed`` (by a signal), ``clean`` (status 0) or ``failed`` (another status). A
holder that let go of the device while still running ended ``clean``; one already
reaped by its parent before vfiod could look ended ``unknown``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from vfiod.address import is_ids
from vfiod.atomicfile import atomic_write
from vfiod.journal import first_error, set_aside
from vfiod.printable import printable
from vfiod.utctime import utc_time
from vfiod.validated import BootId, PciAddress

if TYPE_CHECKING:
    from vfiod.engine.reset import ResetOutcome

log = logging.getLogger("vfiod.records")

RECORDS_FILE = "device-records.json"
MAX_GUEST_RUNS = 20
MAX_RESETS = 10
MAX_RECORDS = 8192
#: A file larger than this is refused unread (a record is well under 10 KiB).
MAX_FILE_BYTES = 16 * 1024 * 1024
_MAX_TEXT = 2000

#: How a guest run ended ("running" while it lasts).
Exit = Literal["running", "clean", "killed", "failed", "unknown"]


def _check_ids(value: str) -> str:
    if not is_ids(value):
        raise ValueError(f"not vendor:device ids: {value[:20]!r}")
    return value


def _check_text(value: str) -> str:
    # Read from the machine (errors, process names): printable, and bounded.
    return printable(value)[:_MAX_TEXT]


Ids = Annotated[str, AfterValidator(_check_ids)]
Text = Annotated[str, AfterValidator(_check_text)]
Micros = Annotated[int, Field(ge=0, lt=2**63)]


@dataclass(frozen=True)
class ResetResult:
    """What one reset came to: the method that worked (or the last tried), how many
    rungs it took, whether the device is healthy, and what is wrong when it is not."""

    method: str
    rungs: int
    healthy: bool
    problem: str = ""


def outcome_of(outcome: ResetOutcome, problem: str | None = None) -> ResetResult:
    """What one climb of the reset ladder (Resetter's ResetOutcome) came to: its method,
    how many rungs it tried, whether the device is healthy, and its problem (*problem*:
    the words of the ResetFailed it raised, in place of its own)."""
    return ResetResult(method=outcome.method, rungs=len(outcome.rungs_tried),
                       healthy=outcome.healthy,
                       problem=outcome.problem if problem is None else problem)


class ResetAttempt(BaseModel):
    """One reset: when, which method, and how it ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_us: Micros
    method: Text
    outcome: Literal["healthy", "failed"]
    rungs: int = Field(ge=0, le=100)
    problem: Text = ""


class GuestRun(BaseModel):
    """One time a process held the device: from when to when, and how it let go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    boot_id: BootId
    pid: int = Field(ge=1, lt=2**31)
    holder: Text
    start_us: Micros
    end_us: Micros = 0
    exit: Exit = "running"
    detail: Text = ""  # "SIGKILL", "status 1", "let go while running"


class DeviceRecord(BaseModel):
    """One function's health record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: PciAddress
    ids: Ids
    reset_count: int = Field(default=0, ge=0)
    consecutive_failures: int = Field(default=0, ge=0)
    quarantined: bool = False
    resets: list[ResetAttempt] = Field(default=[], max_length=MAX_RESETS)
    guest_runs: list[GuestRun] = Field(default=[], max_length=MAX_GUEST_RUNS)

    @property
    def last_reset(self) -> ResetAttempt | None:
        """The latest reset attempt, if any."""
        return self.resets[-1] if self.resets else None


class RecordsFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    records: list[DeviceRecord] = Field(default=[], max_length=MAX_RECORDS)


@dataclass(frozen=True)
class Holding:
    """A function held by a process now (what the holder scan found)."""

    ids: str
    pid: int
    holder: str


def now_us() -> int:
    """Now, in µs since the epoch (as D-Bus ``t`` times are given)."""
    return time.time_ns() // 1000


def classify_exit(status: int | None, alive: bool) -> tuple[Exit, str]:
    """How a holder's run ended: from its exit status (waitpid form) when the kernel
    still had it, else from whether it is still running (it let go: clean)."""
    if status is not None:
        if status & 0x7F:
            try:
                name = signal.Signals(status & 0x7F).name
            except ValueError:
                name = f"signal {status & 0x7F}"
            return "killed", name
        code = (status >> 8) & 0xFF
        return ("clean", "status 0") if code == 0 else ("failed", f"status {code}")
    if alive:
        return "clean", "let go while running"
    return "unknown", "exited; its status was reaped before vfiod could read it"


class DeviceRecords:
    """Every device's record, in memory and in the state directory.

    Thread-safe: the engine's worker threads record resets, the daemon's holder
    checks record guest runs. The file is written (and synced) outside the records'
    lock, so that no reader, nor note_exit on the daemon's event loop, waits for a
    disk flush; only writers wait for each other, and the newest state is what stays
    on disk.
    """

    def __init__(self, directory: str | Path, boot_id: str | None) -> None:
        self.dir = Path(directory)
        self.path = self.dir / RECORDS_FILE
        self.boot_id = boot_id
        self._lock = threading.Lock()
        #: Orders the writes of the file; the records' lock is never taken under it.
        self._write_lock = threading.Lock()
        #: The state's version (bumped under _lock at each change to save) and the
        #: version on disk (under _write_lock): an older snapshot is never written over
        #: a newer one.
        self._version = self._written = 0
        #: What was wrong with the file found on disk, for the daemon to say.
        self.problems: list[str] = []
        self._records: dict[str, DeviceRecord] = self._load()
        #: Exit statuses of holders read when their pidfd said they exited, under a
        #: lock of their own: note_exit runs on the daemon's event loop.
        self._exits: dict[int, int] = {}
        self._exits_lock = threading.Lock()

    # -- the file ---------------------------------------------------------------------
    def _load(self) -> dict[str, DeviceRecord]:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return {}
        why = None
        if len(data) > MAX_FILE_BYTES:
            why = f"larger than {MAX_FILE_BYTES} bytes"
        else:
            try:
                loaded = RecordsFile.model_validate_json(data)
            except ValidationError as exc:
                why = first_error(exc)
            else:
                records = {r.address: r for r in loaded.records}
                if len(records) == len(loaded.records):
                    return records
                why = "two records for one address"
        message = set_aside(self.path, why,
                            "every device's reset and guest history starts anew")
        log.warning("state directory %s: %s", self.dir, message)
        self.problems.append(message)
        return {}

    def _snapshot(self) -> tuple[int, list[DeviceRecord]]:
        """The records as they are now, to save (the caller holds the lock)."""
        self._version += 1
        return self._version, list(self._records.values())

    def _save(self, snapshot: tuple[int, list[DeviceRecord]]) -> None:
        """Write a snapshot (the caller does not hold the lock), unless a newer one is on
        disk already."""
        version, records = snapshot
        with self._write_lock:
            if version <= self._written:
                return
            data = RecordsFile(records=sorted(records, key=lambda r: r.address))
            atomic_write(self.path, data.model_dump_json(indent=1))
            self._written = version

    # -- reading ----------------------------------------------------------------------
    def get(self, address: str, ids: str) -> DeviceRecord | None:
        """The record of the function at *address* with these ids (None: none yet)."""
        with self._lock:
            record = self._records.get(address)
        return record if record is not None and record.ids == ids else None

    def all(self) -> list[DeviceRecord]:
        """Every record, by address."""
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.address)

    def quarantine_reason(self, address: str, ids: str) -> str | None:
        """Why the function is quarantined, with its history and how to lift it; None
        when it is not."""
        record = self.get(address, ids)
        if record is None or not record.quarantined:
            return None
        failed = [r for r in record.resets if r.outcome == "failed"]
        shown = failed[-max(1, min(record.consecutive_failures, 3)):]
        history = "; ".join(f"{utc_time(r.time_us)}: {r.problem or 'failed'}" for r in shown)
        return (f"{address} is quarantined: its last {record.consecutive_failures} "
                f"reset(s) failed in a row ({history}); a suspend/resume cycle, a host "
                f"reboot or vendor-reset may bring it back; then `vfioctl reset --clear "
                f"{address}` lifts the quarantine")

    # -- resets -----------------------------------------------------------------------
    def record_reset(self, address: str, ids: str, outcome: ResetResult,
                     quarantine_after: int, when_us: int | None = None) -> DeviceRecord:
        """Add one reset's outcome; quarantine the function once *quarantine_after*
        resets in a row failed (0: never)."""
        attempt = ResetAttempt(time_us=when_us if when_us is not None else now_us(),
                               method=outcome.method, rungs=min(outcome.rungs, 100),
                               outcome="healthy" if outcome.healthy else "failed",
                               problem=outcome.problem)
        with self._lock:
            old = self._current(address, ids)
            failures = 0 if outcome.healthy else old.consecutive_failures + 1
            quarantine = old.quarantined or (
                quarantine_after > 0 and failures >= quarantine_after)
            record = old.model_copy(update={
                "reset_count": old.reset_count + 1,
                "consecutive_failures": failures,
                "quarantined": quarantine,
                "resets": [*old.resets, attempt][-MAX_RESETS:]})
            self._put(record)
            snapshot = self._snapshot()
        self._save(snapshot)
        if quarantine and not old.quarantined:
            log.error("%s: quarantined after %d failed resets in a row: Bind refuses it "
                      "until `vfioctl reset --clear %s`", address, failures, address)
        return record

    def clear(self, address: str, ids: str) -> bool:
        """Lift the quarantine and forget the failures in a row; True when it was
        quarantined."""
        with self._lock:
            old = self._records.get(address)
            if old is None or old.ids != ids or not (old.quarantined or
                                                      old.consecutive_failures):
                return False
            self._put(old.model_copy(update={"quarantined": False,
                                             "consecutive_failures": 0}))
            snapshot = self._snapshot()
        self._save(snapshot)
        log.info("%s: quarantine cleared", address)
        return old.quarantined

    # -- guest runs -------------------------------------------------------------------
    def note_exit(self, pid: int, status: int | None) -> None:
        """A holder exited; *status* is its exit status when the kernel still had it."""
        if status is not None:
            with self._exits_lock:
                self._exits[pid] = status
                if len(self._exits) > 4096:  # never consumed: a pid we did not track
                    self._exits.pop(next(iter(self._exits)))

    def observe(self, holding: Mapping[str, Holding],
                exit_status: Callable[[int], int | None],
                alive: Callable[[int], bool], when_us: int | None = None) -> list[str]:
        """Bring guest runs in step with who holds which function now.

        *holding*: every function on vfio-pci that a process holds. A run starts for a
        function newly held, ends for one no longer held (or held by another process,
        or left open by an earlier boot). Returns the addresses whose record changed.
        """
        when = when_us if when_us is not None else now_us()
        changed: list[str] = []
        snapshot = None
        with self._lock:
            for address, record in list(self._records.items()):
                run = record.guest_runs[-1] if record.guest_runs else None
                if run is None or run.exit != "running":
                    continue
                now = holding.get(address)
                if (now is not None and now.pid == run.pid and now.ids == record.ids
                        and run.boot_id == self.boot_id):
                    continue  # the same run goes on
                self._put(self._end_run(record, run, when, exit_status, alive))
                changed.append(address)
            if self.boot_id is not None:
                for address, now in holding.items():
                    record = self._current(address, now.ids)
                    run = record.guest_runs[-1] if record.guest_runs else None
                    if run is not None and run.exit == "running":
                        continue
                    started = GuestRun(boot_id=self.boot_id, pid=now.pid, holder=now.holder,
                                       start_us=when)
                    self._put(record.model_copy(update={
                        "guest_runs": [*record.guest_runs, started][-MAX_GUEST_RUNS:]}))
                    changed.append(address)
            if changed:
                snapshot = self._snapshot()
        if snapshot is not None:
            self._save(snapshot)
        return sorted(set(changed))

    def _end_run(self, record: DeviceRecord, run: GuestRun, when: int,
                 exit_status: Callable[[int], int | None],
                 alive: Callable[[int], bool]) -> DeviceRecord:
        if run.boot_id != self.boot_id:
            how: tuple[Exit, str] = ("unknown", "the host rebooted meanwhile")
        else:
            with self._exits_lock:
                status = self._exits.pop(run.pid, None)
            if status is None:
                status = exit_status(run.pid)
            how = classify_exit(status, status is None and alive(run.pid))
        ended = run.model_copy(update={"end_us": max(when, run.start_us), "exit": how[0],
                                       "detail": how[1]})
        log.info("%s: guest run of %s ended %s (%s)", record.address, run.holder, how[0],
                 how[1])
        return record.model_copy(update={"guest_runs": [*record.guest_runs[:-1], ended]})

    # -- helpers (the caller holds the lock) -------------------------------------------
    def _current(self, address: str, ids: str) -> DeviceRecord:
        record = self._records.get(address)
        if record is None or record.ids != ids:
            if record is not None:
                log.info("%s: now %s, no longer %s: its record starts anew", address, ids,
                         record.ids)
            record = DeviceRecord(address=address, ids=ids)
        return record

    def _put(self, record: DeviceRecord) -> None:
        self._records[record.address] = record
        if len(self._records) > MAX_RECORDS:
            self._records.pop(min(self._records, key=lambda a: _last_activity(
                self._records[a])))


def _last_activity(record: DeviceRecord) -> int:
    times = [r.time_us for r in record.resets] + [g.start_us for g in record.guest_runs]
    return max(times, default=0)


def summary(record: DeviceRecord, quarantine_reason: str | None) -> dict[str, Any]:
    """The DeviceStatus fields a record fills."""
    last = record.last_reset
    return {
        "reset_count": record.reset_count,
        "last_reset_method": last.method if last else "",
        "last_reset_outcome": last.outcome if last else "",
        "last_reset_time": last.time_us if last else 0,
        "last_reset_rungs": last.rungs if last else 0,
        "consecutive_reset_failures": record.consecutive_failures,
        "guest_runs": [(g.start_us, g.end_us, g.exit) for g in record.guest_runs],
        "quarantined": record.quarantined,
        "quarantine_reason": quarantine_reason or "",
    }
