"""What changes the host: bind and unbind as transactions over an IOMMU group, and recovery.

Every operation first builds its plan over the device's group (vfiod.engine.plan:
endpoints move together, bridges stay; the guards; the fence) and executes it: it
journals where every member was, applies with driver_override +
unbind + drivers_probe, verifies each member's ``driver`` link, writes the journal's
commit mark, and on any failure before that puts every member back. A process killed
mid-way leaves its transaction in the journal; ``recover()`` at the next start rolls
it back, or forward when the commit mark shows every step done and verified. A
transaction of an earlier boot is never replayed (vfiod.journal discards it).

A recorded host driver is a preference: when it does not bind (its module gone or
replaced, nouveau by nvidia), Unbind takes the kernel's choice, says so once, and
records that driver instead.

Before detaching devices from vfio-pci an unbind opens the group node itself (the
fence, vfiod.engine.fence) and holds it to the end. A write that outlives its timeout
is not rolled back at once (that would touch a device whose write is still in the
kernel): its group stays busy with the reason, the caller gets Timeout, and a
background thread finishes the transaction when the kernel returns (every step can be
run again), or rolls it back, and tells the inventory's listener.

Each operation scans /proc for holders once, before it writes, and hands that scan and
the addresses it touched to the inventory afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from pydantic import ValidationError

from vfiod.engine import progress
from vfiod.engine.fence import Fence, raise_fence
from vfiod.engine.inventory import Holders, Inventory
from vfiod.engine.plan import BRIDGE_STAYS, Plan
from vfiod.engine.writes import Writer
from vfiod.errors import (ALL_ERRORS, Failed, HostWriteError, HostWriteTimeout, InUse,
                          ModuleLoadError, Timeout, VfiodError)
from vfiod.host.base import PendingWrite
from vfiod.host import paths
from vfiod.journal import Journal, MemberRecord, Transaction
from vfiod.model import VFIO_DRIVER, PciDevice, is_vfio_driver

log = logging.getLogger("vfiod.engine")

def public_error(exc: Exception, note: str) -> VfiodError:
    """The error a client sees for a failed transaction: its public class, with a note."""
    public = next((c for c in type(exc).__mro__ if c in ALL_ERRORS), Failed)
    return public(f"{exc} ({note})")


def group_key(dev: PciDevice | None, address: str) -> str:
    """The key operations are serialised on: the IOMMU group, else the device."""
    if dev is not None and dev.iommu_group is not None:
        return group_lock_key(dev.iommu_group)
    return address


def group_lock_key(group: int) -> str:
    """The key of an IOMMU group (group_key of its functions)."""
    return f"group-{group}"


def lock_order(key: str) -> tuple[int, int, str]:
    """The one order in which operations take several group keys (no two can each wait
    for a key the other holds): groups by number, then devices without a group."""
    group = key.removeprefix("group-")
    if group != key and group.isdigit():
        return (0, int(group), "")
    return (1, 0, key)


def stall_reason(inventory: Inventory, exc: HostWriteTimeout, group: int | None) -> str:
    """Why a group is busy while a write is in the kernel: which write, since when, who."""
    pending = exc.pending
    since = pending.since if isinstance(pending, PendingWrite) else time.time()
    reason = (f"writing {exc.value.strip() or repr(exc.value)} to {exc.path} is blocked in "
              f"the kernel since {time.strftime('%H:%M:%S', time.gmtime(since))} UTC")
    names = inventory.vfio_holder_names(group) if group is not None else []
    return reason + (f", held by {', '.join(names)}" if names else "")


class Transactions:
    """Moves IOMMU groups between vfio-pci and host drivers, all or nothing."""

    def __init__(self, inventory: Inventory, journal: Journal, writer: Writer) -> None:
        self.inventory = inventory
        self.host = inventory.host
        self.journal = journal
        self.writer = writer

    # -- bind / unbind ----------------------------------------------------------------
    def holding(self, targets: list[PciDevice]) -> str:
        """What a bind waits for: ``pulseaudio (pid 812) to release 0000:06:00.1``."""
        holders = self.inventory.scan_holders(self.inventory.nodes_of(targets))
        held = []
        for dev in targets:
            nodes = set(self.inventory.nodes_of([dev]))
            procs = {p.pid: p for node, found in holders.items() if node in nodes
                     for p in found}
            if procs:
                held.append(f"{', '.join(map(str, procs.values()))} to release {dev.address}")
        return "; ".join(held) or "the host to stop using " + ", ".join(
            d.address for d in targets)

    def execute(self, plan: Plan) -> list[str]:
        """Run a bind or unbind plan: raise its refusal, or move its targets under a
        journalled transaction; returns the addresses that moved."""
        fence = plan.take_fence()
        try:
            if plan.refusal is not None:
                raise plan.refusal
            targets = plan.targets
            if not targets:
                # Already where it was asked to go: the call succeeded, so an error mark
                # a failed call left (a refused reset) goes, as after a move (found by
                # the torture suite: the device stayed "error" after a successful Unbind).
                self.inventory.clear_errors(
                    [m.address for m in plan.members if m.note != BRIDGE_STAYS]
                    if plan.group else [plan.address])
                return []
            if plan.operation == "bind":
                self._ensure_vfio_module()
                self.journal.remember_host_drivers(
                    {m.address: m.driver for m in targets if m.driver and not m.on_vfio})
                return self._transaction("bind", targets, self._move_to_vfio, plan.holders)
            unbinding, fence = fence, None  # _transaction closes it
            return self._transaction("unbind", targets, self._move_to_host, None, unbinding)
        finally:
            if fence is not None:
                fence.close()

    def _transaction(self, operation: Literal["bind", "unbind"], targets: list[PciDevice],
                     step: Callable[[PciDevice], str | None], holders: Holders | None,
                     fence: Fence | None = None) -> list[str]:
        """Run *step* on every target under a journalled transaction.

        *step* moves one member and returns the driver it verified. *holders*: the scan
        taken before, still true afterwards (a bind: the members' group node); None
        when the move made new nodes whose holders are unknown (a return to host
        drivers), so they are scanned once afterwards. *fence* is held until the
        transaction is over (closed here, or by the background finisher).
        """
        touched = [m.address for m in targets]
        after: dict[str, str | None] = {}
        try:
            txn = self.journal.new(operation, [self._record(m) for m in targets])
            self.journal.begin(txn)
            try:
                self._apply(targets, step, 0, after)
            except HostWriteTimeout as exc:
                group = targets[0].iommu_group
                self._stall(txn, targets, step, holders, fence, exc, after)
                fence = None  # the finisher holds it now
                where = f"IOMMU group {group}" if group is not None else touched[0]
                raise Timeout(f"{exc}; {where} stays busy until the kernel returns, then "
                              f"vfiod finishes the {operation} by itself") from None
            except Exception as exc:  # a BaseException (a kill) leaves the journal for recover()
                raise self._fail(txn, touched, exc) from None
            self._succeed(txn, touched, after, holders)
            return touched
        finally:
            if fence is not None:
                fence.close()

    def _apply(self, targets: list[PciDevice], step: Callable[[PciDevice], str | None],
               start: int, after: dict[str, str | None]) -> None:
        """Run *step* on targets[start:], noting in *after* the driver each verified; a
        timeout says which target it stalled at."""
        for index in range(start, len(targets)):
            try:
                after[targets[index].address] = step(targets[index])
            except HostWriteTimeout as exc:
                exc.index = index  # type: ignore[attr-defined]
                raise

    def _succeed(self, txn: Transaction, touched: list[str], after: dict[str, str | None],
                 holders: Holders | None) -> None:
        """Every step done and verified: the commit mark (from here on, recovery rolls
        forward), then what follows it, and the journal entry goes."""
        done = self.journal.commit(txn, after)
        self._finish(done)
        self.journal.end(done)
        self.inventory.clear_errors(touched)
        self._reread(touched, holders)

    def _fail(self, txn: Transaction, touched: list[str], exc: Exception) -> VfiodError:
        """Roll a failed transaction back; return the error its caller reports.

        Rolling a bind back detaches members from vfio-pci, so it raises the fence first
        (an unbind holds its own already): a guest that opened the group half-way keeps
        it, and the journal stays for the next start to roll back once it is free.
        """
        with progress.rolling_back():
            fence = self._recovery_fence(txn) if txn.operation == "bind" else None
            if fence is False:  # logged and recorded by _recovery_fence
                return Failed(f"{exc}; not rolled back: a process opened the IOMMU group "
                              f"of {txn.members[0].address} meanwhile and holds it; the next "
                              "start of vfiod rolls it back once it is free")
            try:
                problems = self.roll_back(txn)
            finally:
                if isinstance(fence, Fence):
                    fence.close()
        if not problems:
            self.journal.end(txn)
        self.inventory.record_error(touched, str(exc))
        self._reread(touched, None)  # back on host drivers: their nodes are new
        if problems:
            return Failed(f"{exc}; rolling back also failed: {'; '.join(problems)}")
        return public_error(exc, "every device was put back where it was")

    # -- a write that outlived its timeout ---------------------------------------------
    def _stall(self, txn: Transaction, targets: list[PciDevice],
               step: Callable[[PciDevice], str | None], holders: Holders | None,
               fence: Fence | None, exc: HostWriteTimeout,
               after: dict[str, str | None]) -> None:
        """Show the group busy with why, and finish the transaction when the kernel
        returns, on a thread of its own (nothing touches the group meanwhile)."""
        group = targets[0].iommu_group
        stalled = sorted({m.address for m in targets}
                         | set(self.inventory.members(targets[0].address)))
        reason = stall_reason(self.inventory, exc, group)
        self.inventory.stall(stalled, reason)
        log.warning("%s: %s; finishing the %s when the kernel returns",
                    txn.key, reason, txn.operation)
        threading.Thread(target=self._finish_stalled, name=f"finish {txn.key}", daemon=True,
                         args=(txn, targets, step, holders, fence, exc, after,
                               stalled)).start()

    def _finish_stalled(self, txn: Transaction, targets: list[PciDevice],
                        step: Callable[[PciDevice], str | None], holders: Holders | None,
                        fence: Fence | None, exc: HostWriteTimeout,
                        after: dict[str, str | None], stalled: list[str]) -> None:
        """Wait for the stalled write; then run the rest (from the stalled step, which
        is safe to run again) and verify, then the commit mark (_succeed), or roll back;
        then tell the listener. *after*: the drivers the steps before it verified."""
        touched = [m.address for m in targets]
        try:
            while True:
                pending = exc.pending
                if isinstance(pending, PendingWrite):
                    pending.wait()
                # Readable again, still closed to other operations until it is over.
                self.inventory.stall(stalled, f"finishing the {txn.operation} after the "
                                     "kernel returned", readable=True)
                try:
                    if isinstance(pending, PendingWrite) and pending.error is not None:
                        raise pending.error
                    self._apply(targets, step, getattr(exc, "index", 0), after)
                except HostWriteTimeout as again:
                    exc = again
                    self.inventory.stall(stalled, stall_reason(
                        self.inventory, again, targets[0].iommu_group))
                    continue
                except Exception as failed:
                    error = self._fail(txn, touched, failed)
                    log.error("%s: the %s finished after the kernel returned, and failed: %s",
                              txn.key, txn.operation, error)
                    return
                self._succeed(txn, touched, after, holders)
                log.info("%s: the kernel returned; the %s finished: %s", txn.key,
                         txn.operation, ", ".join(touched))
                return
        except BaseException:
            log.exception("%s: finishing the %s failed", txn.key, txn.operation)
        finally:
            self.inventory.unstall(stalled)
            if fence is not None:
                fence.close()
            self.inventory.notify(stalled)

    @staticmethod
    def _record(dev: PciDevice) -> MemberRecord:
        """A member's journal record, validated before the first write."""
        try:
            return MemberRecord(address=dev.address, driver=dev.driver,
                                driver_override=dev.driver_override)
        except ValidationError:
            raise Failed(f"{dev.address}: its driver_override {dev.driver_override!r:.60} is "
                         "no driver name; refusing to journal it (write a driver name or "
                         "an empty line to it)") from None

    def _finish(self, txn: Transaction) -> None:
        """What follows a transaction whose every step was done (also when rolling
        forward): after an unbind, the host drivers the members went to are their
        records from now on."""
        if txn.operation == "unbind":
            self.journal.remember_host_drivers(
                {m.address: m.driver_after for m in txn.members
                 if m.driver_after and not is_vfio_driver(m.driver_after)})

    def _reread(self, touched: list[str], holders: Holders | None) -> None:
        """Bring the inventory up to date for what a transaction touched."""
        if holders is None:
            self.inventory.reread(touched)
            self.inventory.rescan_holders_of(touched)
        else:
            self.inventory.reread(touched, holders)

    # -- the steps --------------------------------------------------------------------
    # Each step can be run again after a stalled write returned: it looks first.
    def _move_to_vfio(self, dev: PciDevice) -> str:
        a, write = dev.address, self.writer.write
        progress.step(f"writing driver_override of {a}")
        write(paths.device_file(a, "driver_override"), VFIO_DRIVER, a)
        current = self.writer.driver(a)
        if current == VFIO_DRIVER:
            return current
        if current:
            progress.step(f"unbinding {a} from {current}")
            write(paths.device_file(a, "driver/unbind"), a, a)
        progress.step(f"probing vfio-pci for {a}")
        write(paths.drivers_probe(), a, a)
        now = self.writer.driver(a)
        if now != VFIO_DRIVER:
            # drivers_probe succeeds even when nothing binds: the link is the truth.
            raise Failed(f"{a}: vfio-pci did not bind it (driver now: {now or 'none'})")
        return now

    def _move_to_host(self, dev: PciDevice) -> str | None:
        a, write = dev.address, self.writer.write
        want = self.journal.host_driver(a)
        progress.step(f"writing driver_override of {a}")
        write(paths.device_file(a, "driver_override"), "\n", a)
        if is_vfio_driver(self.writer.driver(a) or ""):
            progress.step(f"unbinding {a} from vfio-pci")
            write(paths.device_file(a, "driver/unbind"), a, a)
        progress.step(f"probing {want or 'the host driver'} for {a}")
        got = self._probe_host_driver(a, want, dev.modalias)
        if want and got is None:
            raise Failed(f"{a}: neither its host driver {want} nor any other driver bound it")
        if want and got != want:
            # The record is a preference: its module is gone or replaced (nouveau by
            # nvidia). The kernel's choice stands, and becomes the record: said once.
            log.warning("%s: its recorded host driver %s did not bind it; the kernel chose "
                        "%s, which is its host driver from now on", a, want, got)
            self.journal.remember_host_drivers({a: got})
        return got

    def _probe_host_driver(self, a: str, want: str | None, modalias: str) -> str | None:
        """Bind the recorded driver, else let the kernel choose; load modules as needed."""
        driver, write = self.writer.driver, self.writer.write
        if want and not self.host.exists(paths.driver_dir(want)) and modalias:
            self._load_quietly(modalias)  # loading binds the device by itself
        if want and not driver(a) and self.host.exists(paths.driver_dir(want)):
            try:
                write(paths.driver_file(want, "bind"), a, a)
            except HostWriteError as exc:
                log.info("%s: direct bind to %s failed (%s); asking the kernel", a, want, exc)
        if not driver(a):
            write(paths.drivers_probe(), a, a)
        if not driver(a) and modalias:
            self._load_quietly(modalias)
            if not driver(a):
                write(paths.drivers_probe(), a, a)
        return driver(a)

    def _load_quietly(self, name: str) -> None:
        try:
            self.host.load_module(name)
        except ModuleLoadError as exc:
            log.info("%s", exc)

    def _ensure_vfio_module(self) -> None:
        if not self.host.exists(paths.driver_dir(VFIO_DRIVER)):
            progress.step("loading the vfio-pci module")
            self.host.load_module(VFIO_DRIVER)
            if not self.host.exists(paths.driver_dir(VFIO_DRIVER)):
                raise Failed("vfio-pci is not available: modprobe vfio-pci loaded no driver")

    # -- rollback and recovery --------------------------------------------------------
    def roll_back(self, txn: Transaction) -> list[str]:
        """Put every member back where the transaction found it; return what failed."""
        problems = []
        for record in reversed(txn.members):
            try:
                self._restore(record)
            except VfiodError as exc:
                problems.append(str(exc))
        return problems

    def _restore(self, record: MemberRecord) -> None:
        a, write = record.address, self.writer.write
        if not self.host.exists(paths.device_dir(a)):
            return  # removed meanwhile: nothing to put back
        current = self.writer.driver(a)
        override = self.host.read_text(paths.device_file(a, "driver_override"))
        override = None if override in ("(null)", "") else override
        if current == record.driver and override == record.driver_override:
            return
        write(paths.device_file(a, "driver_override"), record.driver_override or "\n", a)
        if current == record.driver:
            return
        if current:
            write(paths.device_file(a, "driver/unbind"), a, a)
        if record.driver is None:
            return
        if is_vfio_driver(record.driver):
            self._ensure_vfio_module()
        modalias = self.host.read_text(paths.device_file(a, "modalias")) or ""
        got = self._probe_host_driver(a, record.driver, modalias)
        if got != record.driver:
            raise Failed(f"{a}: could not put it back on {record.driver} "
                         f"(driver now: {got or 'none'})")

    def _recovery_fence(self, txn: Transaction) -> Fence | None | bool:
        """The fence for rolling *txn* back (a roll-back may detach from vfio-pci), None
        when nothing needs one, False (logged, recorded) when a guest holds the group."""
        for record in txn.members:
            if not self.host.exists(paths.device_dir(record.address)):
                continue
            try:
                dev, _members = self.inventory.fresh(record.address)
                return raise_fence(self.inventory, dev, f"roll back the unfinished "
                                   f"{txn.operation}")
            except InUse as exc:
                log.error("%s; leaving it for the next start", exc)
                self.inventory.record_error([m.address for m in txn.members], str(exc))
                return False
            except VfiodError:
                continue
        return None

    def roll_forward(self, txn: Transaction) -> None:
        """Finish a transaction whose commit mark shows every step done and verified.

        Nothing is written to the host: the members are where the operation took
        them. One found elsewhere (moved by someone since) is left there and logged.
        """
        for record in txn.members:
            now = self.writer.driver(record.address)
            if self.host.exists(paths.device_dir(record.address)) and now != record.driver_after:
                log.warning("%s: the %s left it on %s, but it is on %s now: left there",
                            record.address, txn.operation, record.driver_after or "no driver",
                            now or "no driver")
        self._finish(txn)

    def recover(self) -> list[str]:
        """Finish what a killed process left unfinished in this boot; return whom it covered.

        A transaction with its commit mark (every step done and verified) rolls
        forward; any other rolls back: every member goes back where the journal says
        it was. Transactions of an earlier boot and damaged files were set aside by
        the journal (Journal.problems says which).
        """
        touched: list[str] = []
        for txn in self.journal.unfinished():
            members = ", ".join(txn.addresses)
            problems: list[str] = []
            if txn.committed:
                log.warning("rolling forward a %s of %s: every step was done", txn.operation,
                            members)
                self.roll_forward(txn)  # writes nothing: no fence needed
            else:
                # A roll-back may detach from vfio-pci: the fence first.
                fence = self._recovery_fence(txn)
                if fence is False:
                    continue  # a guest holds the group: kept for the next start
                log.warning("rolling back an unfinished %s of %s", txn.operation, members)
                try:
                    problems = self.roll_back(txn)
                finally:
                    if isinstance(fence, Fence):
                        fence.close()
            touched += txn.addresses
            if problems:
                self.inventory.record_error(txn.addresses, "; ".join(problems))
                log.error("recovery of %s incomplete: %s", members, "; ".join(problems))
            else:
                self.journal.end(txn)
        self.inventory.rescan()
        return touched
