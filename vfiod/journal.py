"""State that must survive a daemon crash, kept as small JSON files written atomically.

- ``host-drivers.json``: the host driver each device had before vfiod bound it to
  vfio-pci: a preference for Unbind, kept up to date with what the host actually binds.
- ``rescan-<address>.json``: a reset's remove and rescan of a slot in progress (its
  functions): a killed process may leave the slot removed, or rescanned onto its host
  driver, which the next start puts right (rescanned, back on vfio-pci).
- ``txn-<address>.json``: the transaction in progress on a set of functions, named by
  its lowest member address (transactions that run at once never share a member, and
  an address survives the group renumbering a reboot or a rescan may bring). It holds
  the boot it belongs to and every member's driver and driver_override before it
  began; it is on disk before the first step. After the last step's verification a
  commit mark is written (the members' drivers afterwards); then the file is removed.

Nothing read back is trusted: every record passes the validators of vfiod.validated
before any path is built from it. A file that does not is moved aside
(``txn-....json.damaged-<time>``) and reported, never deleted or read as empty. A
transaction from an earlier boot is logged and discarded: the machine it described
is gone (the early-boot shim may have set it up anew since).

So transaction and rescan files are written atomically but never fsynced: what they
must survive is the daemon being killed, which the page cache outlives; a power cut or
a kernel crash is a new boot, whose start discards them whatever reached the disk. An
fsync there would buy nothing and cost each operation four disk flushes (a spinning
disk's 10-20 ms each). ``host-drivers.json`` outlives boots and is written durably.

The directory is refused unless it and everything in it belong to the daemon's user
and nobody else may write there (what it holds decides which devices get written).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from vfiod.atomicfile import atomic_write
from vfiod.errors import Failed
from vfiod.validated import BootId, DriverName, Override, PciAddress

log = logging.getLogger("vfiod.journal")

HOST_DRIVERS = "host-drivers.json"
TXN_PREFIX = "txn-"
RESCAN_PREFIX = "rescan-"
TXN_SUFFIX = ".json"
DAMAGED = ".damaged-"


class UnsafeStateDir(Failed):
    """The state directory (or a file in it) could be changed by someone else."""


class MemberRecord(BaseModel):
    """One device's place before a transaction touched it (and after, once committed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: PciAddress
    driver: DriverName | None
    driver_override: Override
    #: Where the operation left it, written with the commit mark.
    driver_after: DriverName | None = None


class Transaction(BaseModel):
    """An operation in progress on a set of functions (an IOMMU group or one function)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    boot_id: BootId
    operation: Literal["bind", "unbind"]
    members: list[MemberRecord] = Field(min_length=1)
    #: True once every step was done and verified: recovery rolls forward, not back.
    committed: bool = False

    @property
    def key(self) -> str:
        """The lowest member address: what names the transaction's file."""
        return min(m.address for m in self.members)

    @property
    def addresses(self) -> list[str]:
        """Every member's address, in the transaction's order."""
        return [m.address for m in self.members]


class RescanRecord(BaseModel):
    """A remove and rescan of a slot in progress (see Resetter's remove_rescan rung)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    boot_id: BootId
    #: The functions of the slot, every one on vfio-pci before.
    members: list[PciAddress] = Field(min_length=1)

    @property
    def key(self) -> str:
        """The lowest member address: what names the record's file."""
        return min(self.members)

    @property
    def addresses(self) -> list[str]:
        """Every member's address (as Transaction.addresses)."""
        return list(self.members)


#: What Journal._left_behind reads: a transaction or a remove and rescan.
_Left = TypeVar("_Left", Transaction, RescanRecord)

_DRIVERS = TypeAdapter(dict[PciAddress, DriverName])


def check_state_dir(directory: Path) -> None:
    """Refuse a state directory, or an entry in it, that another user could have written.

    It must be a real directory (no symbolic link) owned by the daemon's user and
    writable by nobody else; every entry a regular file with the same properties.
    Raises UnsafeStateDir saying what is wrong and how to fix it.
    """
    me = os.geteuid()

    def check(path: Path, want_dir: bool) -> None:
        st = os.lstat(path)
        kind = "directory" if want_dir else "regular file"
        if want_dir and not stat.S_ISDIR(st.st_mode) or \
                not want_dir and not stat.S_ISREG(st.st_mode):
            raise UnsafeStateDir(f"state directory {directory}: {path} is not a {kind} "
                                 "(a symbolic link or a device?): remove it")
        if st.st_uid != me:
            raise UnsafeStateDir(f"state directory {directory}: {path} is owned by uid "
                                 f"{st.st_uid}, not by vfiod's user (uid {me}): "
                                 f"chown {me} {path}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeStateDir(f"state directory {directory}: {path} is writable by "
                                 f"others (mode {stat.S_IMODE(st.st_mode):04o}): "
                                 f"chmod go-w {path}")

    check(directory, True)
    for entry in sorted(os.listdir(directory)):
        check(directory / entry, False)


class Journal:
    """The daemon's persistent state directory, bound to the boot it runs in.

    *boot_id*: the kernel's boot id now (Host.boot_id()); None when it could not be
    read: transactions are then refused (begin) and left in place (unfinished).
    """

    def __init__(self, directory: str | os.PathLike[str], boot_id: str | None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_state_dir(self.dir)
        self.boot_id = boot_id
        self._lock = threading.Lock()
        #: What was wrong with the state found on disk (damaged files moved aside,
        #: transactions of an earlier boot discarded), for the daemon to say.
        self.problems: list[str] = []
        self._drivers_path = self.dir / HOST_DRIVERS
        self._drivers: dict[str, str] = self._load_drivers()

    # -- host drivers -----------------------------------------------------------------
    def _load_drivers(self) -> dict[str, str]:
        try:
            data = self._drivers_path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return _DRIVERS.validate_json(data)
        except ValidationError as exc:
            self._set_aside(self._drivers_path, first_error(exc),
                            "the host drivers devices came from are forgotten; Unbind "
                            "lets the kernel choose")
            return {}

    def host_driver(self, address: str) -> str | None:
        """The host driver recorded for *address* (where Unbind prefers to return it)."""
        with self._lock:
            return self._drivers.get(address)

    def host_drivers(self) -> dict[str, str]:
        """Every record, by address (a copy)."""
        with self._lock:
            return dict(self._drivers)

    def remember_host_drivers(self, drivers: dict[str, str]) -> None:
        """Record where devices came from or went back to (one atomic write when any
        record changes). Every value is validated first."""
        checked = _DRIVERS.validate_python(drivers)
        with self._lock:
            changed = {a: d for a, d in checked.items() if self._drivers.get(a) != d}
            if not changed:
                return
            self._drivers.update(changed)
            atomic_write(self._drivers_path, _DRIVERS.dump_json(
                dict(sorted(self._drivers.items())), indent=1).decode())

    # -- transactions -----------------------------------------------------------------
    def new(self, operation: Literal["bind", "unbind"],
            members: list[MemberRecord]) -> Transaction:
        """A transaction of this boot (not yet on disk); Failed when the boot id is unknown."""
        if self.boot_id is None:
            raise Failed("the kernel's boot id could not be read: refusing to change "
                         "devices without a journal bound to this boot")
        return Transaction(boot_id=self.boot_id, operation=operation, members=members)

    def _txn_path(self, key: str) -> Path:
        # The key went through PciAddress: it is one harmless file name.
        return self.dir / f"{TXN_PREFIX}{key}{TXN_SUFFIX}"

    def begin(self, txn: Transaction) -> None:
        """Persist a transaction before its first step (for this boot: no fsync)."""
        atomic_write(self._txn_path(txn.key), txn.model_dump_json(indent=1), durable=False)

    def commit(self, txn: Transaction, after: dict[str, str | None]) -> Transaction:
        """Mark every step done and verified, with where each member ended (*after*)."""
        done = txn.model_copy(update={"committed": True, "members": [
            m.model_copy(update={"driver_after": after.get(m.address)}) for m in txn.members]})
        done = Transaction.model_validate(done.model_dump())  # the validators, once more
        atomic_write(self._txn_path(done.key), done.model_dump_json(indent=1), durable=False)
        return done

    def end(self, txn: Transaction) -> None:
        """Forget a finished (or rolled back) transaction."""
        self._unlink(self._txn_path(txn.key))

    def unfinished(self) -> list[Transaction]:
        """This boot's transactions a killed process left behind.

        A damaged file is moved aside and reported; a transaction of an earlier boot
        is logged and discarded. With the boot id unknown nothing is returned and
        nothing removed (each file is reported, left in place).
        """
        return self._left_behind(
            TXN_PREFIX, Transaction, self._txn_path, "transaction",
            lambda txn: f"an unfinished {txn.operation} of {', '.join(txn.addresses)}")

    # -- remove and rescan ----------------------------------------------------------------
    def _rescan_path(self, key: str) -> Path:
        return self.dir / f"{RESCAN_PREFIX}{key}{TXN_SUFFIX}"

    def begin_rescan(self, members: list[str]) -> RescanRecord:
        """Persist a remove and rescan before its first write; Failed when the boot id
        is unknown."""
        if self.boot_id is None:
            raise Failed("the kernel's boot id could not be read: refusing to remove "
                         "devices without a journal bound to this boot")
        record = RescanRecord(boot_id=self.boot_id, members=members)
        atomic_write(self._rescan_path(record.key), record.model_dump_json(indent=1),
                     durable=False)
        return record

    def end_rescan(self, record: RescanRecord) -> None:
        """Forget a finished remove and rescan."""
        self._unlink(self._rescan_path(record.key))

    def unfinished_rescans(self) -> list[RescanRecord]:
        """This boot's removes and rescans a killed process left behind (damaged files
        and earlier boots' records are set aside or discarded, and an unknown boot is
        reported, as for transactions)."""
        return self._left_behind(
            RESCAN_PREFIX, RescanRecord, self._rescan_path, "remove and rescan",
            lambda record: f"a remove and rescan of {', '.join(record.members)}")

    def _left_behind(self, prefix: str, model: type[_Left], path_of: Callable[[str], Path],
                     kind: str, what: Callable[[_Left], str]) -> list[_Left]:
        """The records of this boot in the files named *prefix*...: each read through
        *model*'s validators and checked against its file name (*path_of* its key); a
        damaged one is moved aside, one of an earlier boot reported (*what* it was) and
        discarded; with the boot id unknown every one is reported and left in place."""
        out = []
        for path in sorted(self.dir.glob(f"{prefix}*{TXN_SUFFIX}")):
            try:
                record = model.model_validate_json(path.read_bytes())
            except ValidationError as exc:
                self._set_aside(path, first_error(exc), "not replayed")
                continue
            if path.name != path_of(record.key).name:
                self._set_aside(path, f"its name does not match its members "
                                f"({', '.join(record.addresses)})", "not replayed")
                continue
            if self.boot_id is None:
                self._report(f"{path.name}: the kernel's boot id could not be read, so the "
                             f"{kind}'s boot is unknown: left in place, not replayed")
                continue
            if record.boot_id != self.boot_id:
                self._report(f"{path.name}: {what(record)} from an earlier boot "
                             f"({record.boot_id}): discarded, not replayed")
                self._unlink(path)
                continue
            out.append(record)
        return out

    # -- files ------------------------------------------------------------------------
    def _unlink(self, path: Path) -> None:
        # Transaction and rescan files only, which belong to one boot: no fsync.
        path.unlink(missing_ok=True)

    def _set_aside(self, path: Path, why: str, consequence: str) -> None:
        """Move a damaged file out of the way, keeping it for a human to read."""
        self._report(set_aside(path, why, consequence))

    def _report(self, message: str) -> None:
        log.warning("state directory %s: %s", self.dir, message)
        self.problems.append(message)


def move_aside(path: Path) -> Path:
    """Rename a damaged state file to ``<name>.damaged-<UTC time>`` (durably), keeping it
    for a human to read; return its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}{DAMAGED}{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{DAMAGED}{stamp}.{n}")
    os.replace(path, target)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return target


def set_aside(path: Path, why: str, consequence: str) -> str:
    """Move a damaged state file aside (move_aside); the report saying so: what is
    wrong with it (*why*), where it went and what that means (*consequence*)."""
    target = move_aside(path)
    return f"{path.name} is damaged ({why}): moved aside to {target.name}; {consequence}"


def first_error(exc: ValidationError) -> str:
    """The first validation error, short: where it is and what is wrong."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "the file"
    return f"{where}: {err.get('msg', 'invalid')}"
