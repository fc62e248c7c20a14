"""The binding engine: what the host has, what changes it, and reset, behind one facade.

Plain synchronous code over the Host boundary, in three parts:

- ``inventory``: every PCI function as last read, its holders and usages, what is
  busy and what failed; reads only.
- ``transactions``: bind and unbind as journalled transactions over an IOMMU group,
  and recovery of what a killed process left (forward after the commit mark, back
  before it; never a transaction of an earlier boot).
- ``reset``: the kernel's reset methods and VFIO's hot reset.
- ``plan``: what an operation would do, built before it does anything; bind, unbind
  and reset execute their plan, a dry run (``Engine.plan``) only builds it.

``Engine`` composes them and resolves device arguments (addresses and config names)
once, at the door. Callers serialise operations on the keys ``lock_keys`` names (the
group's; for a reset, every group on the device's bus), taking them in that order (the
daemon runs them on worker threads, one group at a time), and may run operations on
different groups in parallel. The engine itself holds no operation lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vfiod.address import check_device_argument, is_address
from vfiod.config import (
    DEFAULT_HANDOVER_TIMEOUT,
    DEFAULT_QUARANTINE_AFTER,
    boot_conflicts,
    check_boot_groups,
    resolve_name,
)
from vfiod.device_records import DeviceRecords, Holding, ResetResult, outcome_of, summary
from vfiod.engine import progress
from vfiod.engine.checks import DeviceCheck, check_devices
from vfiod.engine.handover import Release, hand_over, releases_for_bind
from vfiod.engine.inventory import Inventory
from vfiod.engine.plan import Plan, plan_bind, plan_unbind
from vfiod.engine.progress import Progress, reporting
from vfiod.engine.reset import ResetOutcome, Resetter
from vfiod.engine.transactions import Transactions, group_key, lock_order
from vfiod.engine.writes import Writer
from vfiod.errors import InUse, NoSuchDevice, Quarantined, ResetFailed
from vfiod.host.base import DEFAULT_WRITE_TIMEOUT, Host
from vfiod.journal import Journal
from vfiod.model import PciDevice
from vfiod.records import DeviceStatus

if TYPE_CHECKING:
    from vfiod.config import Config

__all__ = ["Engine", "ResetOutcome"]

log = logging.getLogger("vfiod.engine")


class Engine:
    """What vfiod knows and does about the host's PCI functions."""

    def __init__(self, host: Host, state_dir: str | Path, config: "Config | None" = None,
                 write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        self.host = host
        self.journal = Journal(state_dir, host.boot_id())
        self.config = config
        self.inventory = Inventory(host, self.journal)
        writer = Writer(host, write_timeout)
        self.writer = writer
        self.transactions = Transactions(self.inventory, self.journal, writer)
        self.resetter = Resetter(self.inventory, writer, self.journal)
        #: Each device's resets, guest runs and quarantine (not bound to the boot).
        self.records = DeviceRecords(state_dir, self.journal.boot_id)

    # -- configuration and names ------------------------------------------------------
    @property
    def iommu_enabled(self) -> bool:
        """True when the kernel has IOMMU groups."""
        return self.inventory.iommu_enabled

    def check_config(self, config: "Config | None") -> None:
        """Refuse a config this machine contradicts (ConfigError with file:line): boot
        values that conflict inside an IOMMU group."""
        if config is not None:
            check_boot_groups(config, self.inventory.devices().values())

    def set_config(self, config: "Config | None") -> None:
        """Use a new config (names, on_release) from now on, once check_config accepts
        it; a refused one (ConfigError) leaves the old one in use."""
        self.check_config(config)
        self.config = config

    def resolve(self, arg: str) -> str:
        """A device argument (address, short address, config name) -> full address."""
        value = check_device_argument(arg)  # InvalidArgument before any I/O
        if is_address(value):
            if self.inventory.device(value) is not None:
                return value
            if self.inventory.exists(value):  # hot-added since the last scan
                self.inventory.reread([value])
                return value
            raise NoSuchDevice(f"{value}: no such PCI device")
        return resolve_name(self.config, value, (
            (d.address, d.vendor, d.device) for d in self.inventory.devices().values()))

    def config_names(self, addresses: Iterable[str] | None = None) -> dict[str, str]:
        """Config-file names by address, for the functions (of these) that have one."""
        config = self.config
        if config is None or not any(e.name for e in config.devices):
            return {}
        names: dict[str, str] = {}
        devices = self.inventory.devices()
        chosen = devices if addresses is None else {a: devices[a] for a in addresses
                                                    if a in devices}
        for address, dev in chosen.items():
            entry = config.entry_for(dev)
            if entry is not None and entry.name:
                names[address] = entry.name
        return names

    def wants_vfio(self, address: str) -> bool:
        """True when the config says this (hot-added) function belongs on vfio-pci."""
        config = self.config
        dev = self.inventory.device(address)
        if config is None or dev is None or dev.on_vfio or dev.is_bridge:
            return False
        entry = config.entry_for(dev)
        if entry is None or entry.boot != "vfio":
            return False
        # The group may have changed since the config was checked (a card moved).
        members = [d for a in self.inventory.members(address)
                   if (d := self.inventory.device(a)) is not None]
        conflicts = boot_conflicts(config, members)
        if conflicts:
            log.error("%s: not claiming it: %s", address, conflicts[0].error(config))
            return False
        return True

    # -- operations -------------------------------------------------------------------
    def bind(self, device: str, *, group: bool = True, force: bool = False) -> list[str]:
        """Put a device (and by default every endpoint of its IOMMU group) on vfio-pci.

        Returns the addresses that moved. Raises InUse when a guard refuses (``force``
        overrides the soft ones), GroupNotViable for a device without a group or a
        partial group, Failed (after rolling back) when a step fails, Quarantined when
        one of them is quarantined.
        """
        return self.run("bind", self.resolve(device), group=group, force=force)

    def unbind(self, device: str, *, group: bool = True) -> list[str]:
        """Return a device (and by default its group) from vfio-pci to its host driver.

        The host driver is the one recorded when vfiod bound it; without a record, the
        kernel's best match (its module loaded by modalias when needed). Raises InUse,
        naming the process, while a guest holds the group: unbind is never written then.
        """
        return self.run("unbind", self.resolve(device), group=group)

    def reset(self, device: str, *, force: bool = False, clear: bool = False) -> str:
        """Reset a device with the kernel's methods, best first; return the one that worked.

        *clear*: lift its quarantine first (the user says the card is fixed).
        """
        return self.run("reset", self.resolve(device), force=force, clear=clear)

    def reset_outcome(self, device: str, *, force: bool = False) -> ResetOutcome:
        """reset(), answering how the climb ended (ResetFailed still raised on failure;
        last_reset_outcome() then holds the outcome)."""
        plan = self.build_plan("reset", self.resolve(device), force=force)
        return self._recorded_reset(plan)

    def last_reset_outcome(self, address: str) -> ResetOutcome | None:
        """How the last reset of this function ended (a failed one too), or None."""
        return self.resetter.last_outcome(address)

    def planned_rungs(self, address: str) -> list[str]:
        """The rungs a reset of *address* would try now, in order; no write."""
        return self.resetter.planned_rungs(address)

    def run(self, op: str, address: str, *, group: bool = True, force: bool = False,
            clear: bool = False, progress: Progress | None = None,
            cancelled: Callable[[], bool] | None = None,
            wait: float = 0.0) -> list[str] | str:
        """Run one operation on an address resolve() returned (no second resolution):
        build its plan, then execute it. *clear* (reset): lift the quarantine first.

        *progress* is called at each step (vfiod.engine.progress: the phase, what it
        waits for, whether a kernel write is under way); *cancelled* is asked at each
        safe step, and True stops the operation there (Cancelled, after rolling back);
        *wait*: seconds a Bind waits for a process to let go of the device before
        refusing with InUse (0: refuse at once).
        """
        if op not in ("bind", "unbind", "reset"):
            raise ValueError(f"unknown operation {op}")
        with reporting(progress, cancelled, wait):
            if op == "reset" and clear and self.clear_quarantine(address):
                log.info("%s: quarantine cleared by the user", address)
            plan = self._plan_waiting(op, address, group=group, force=force)
            if op == "reset":
                return self._recorded_reset(plan).method
            return self.transactions.execute(plan)

    def _plan_waiting(self, op: str, address: str, *, group: bool, force: bool) -> Plan:
        """build_plan(), waiting (within the run's ``wait``) while a process that may
        let go holds a device a Bind would take."""
        refused: list[Plan] = []

        def attempt() -> Plan:
            plan = self.build_plan(op, address, group=group, force=force)
            if op == "bind" and isinstance(plan.refusal, InUse) and not plan.refusal.hard:
                refused[:] = [plan]
                raise plan.refusal
            return plan

        return progress.wait_for_holders(
            attempt, lambda _err: self.transactions.holding(refused[0].targets))

    def plan(self, op: str, address: str, *, group: bool = True, force: bool = False) -> Plan:
        """What one operation on an address resolve() returned would do, or the error it
        would raise (Plan.refusal): every check of the real run and no write (the dry
        run). Errors that leave no plan to show (a group busy in the kernel) raise."""
        plan = self.build_plan(op, address, group=group, force=force)
        plan.release()
        return plan

    def build_plan(self, op: str, address: str, *, group: bool = True,
                   force: bool = False) -> Plan:
        """The plan run() executes and plan() shows; it may hold the group's fence
        (Plan.release() lets go when it is not executed)."""
        if op == "bind":
            try:  # a quarantined card is refused before anything else: no read, no scan
                self.check_quarantine(self.affected(op, address, group))
            except Quarantined as exc:
                return Plan("bind", address, group=group, refusal=exc)
            return plan_bind(self.inventory, address, group=group, force=force)
        if op == "unbind":
            return plan_unbind(self.inventory, self.journal, address, group=group)
        if op == "reset":
            return self.resetter.plan(address, force=force)
        raise ValueError(f"unknown operation {op}")

    def check_devices(self, devices: Iterable[str]) -> list[DeviceCheck]:
        """Every problem with handing *devices* (one guest's list) to vfio-pci, each with
        its fix, and an ok row per ready device (vfiod.engine.checks); writes nothing."""
        return check_devices(self, devices)

    # -- the health record ------------------------------------------------------------
    def _recorded_reset(self, plan: Plan) -> ResetOutcome:
        """Execute a reset plan and add the outcome to the device's record: a healthy
        device, or a reset that failed (ResetFailed). A reset refused before it began
        (held, in use, every rung refused by the kernel) or still in the kernel (Timeout)
        is no outcome."""
        address = plan.address
        try:
            result = self.resetter.execute(plan)
        except ResetFailed as err:
            climbed = self.resetter.last_outcome(address)
            if climbed is not None and not climbed.touched:
                raise  # the kernel refused every rung: nothing happened to the device
            # The rungs it tried, with the failure's words.
            failed = outcome_of(climbed, str(err)) if climbed is not None else \
                ResetResult(method="", rungs=0, healthy=False, problem=str(err))
            self._record_reset(address, failed)
            raise
        self._record_reset(address, outcome_of(result))
        return result

    def _record_reset(self, address: str, outcome: ResetResult) -> None:
        ids = self._ids(address)
        if ids is not None:
            self.records.record_reset(address, ids, outcome, self.quarantine_after)

    @property
    def quarantine_after(self) -> int:
        """Failed resets in a row after which a device is quarantined (0: never)."""
        return self.config.quarantine_after if self.config is not None \
            else DEFAULT_QUARANTINE_AFTER

    def quarantine_reason(self, address: str) -> str | None:
        """Why Bind refuses this function (its reset history and how to lift the
        quarantine), or None when it is not quarantined."""
        ids = self._ids(address)
        return self.records.quarantine_reason(address, ids) if ids is not None else None

    def check_quarantine(self, addresses: Iterable[str]) -> None:
        """Quarantined (with the history) when one of these functions is quarantined."""
        for address in addresses:
            reason = self.quarantine_reason(address)
            if reason is not None:
                raise Quarantined(reason)

    def clear_quarantine(self, address: str) -> bool:
        """Lift a function's quarantine; True when it was quarantined."""
        ids = self._ids(address)
        return ids is not None and self.records.clear(address, ids)

    def note_exit(self, pid: int) -> None:
        """A holder's pidfd says it exited: keep its exit status while the kernel still
        has it (before its parent reaps it), for its guest run's record."""
        self.records.note_exit(pid, self.host.exit_status(pid))

    def observe_guests(self) -> list[str]:
        """Start and end guest runs in the records from the holders as last checked;
        the addresses whose record changed."""
        holding = {a: Holding(ids=d.ids, pid=procs[0].pid,
                              holder=", ".join(str(p) for p in procs))
                   for a, (d, procs) in self.inventory.vfio_holders().items()}
        return self.records.observe(holding, self.host.exit_status, self.host.alive)

    def _ids(self, address: str) -> str | None:
        dev = self.inventory.device(address)
        return dev.ids if dev is not None else None

    def _with_record(self, status: DeviceStatus) -> DeviceStatus:
        """*status* with its health record's fields filled in (when it has one)."""
        record = self.records.get(status.address, status.ids)
        if record is None:
            return status
        reason = self.records.quarantine_reason(status.address, status.ids)
        return status.model_copy(update=summary(record, reason))

    def affected(self, op: str, address: str, group: bool) -> list[str]:
        """The functions an operation may move: the endpoints of the group, or one."""
        if op == "reset" or not group:
            return [address]
        members = [self.inventory.device(a) for a in self.inventory.members(address)]
        return [d.address for d in members if d is not None and not d.is_bridge] or [address]

    def recover(self) -> list[str]:
        """Finish (roll forward or back) what a killed process left in this boot; return
        the addresses covered. What was set aside is in state_problems()."""
        return self.resetter.recover_rescans() + self.transactions.recover()

    def state_problems(self) -> list[str]:
        """What was wrong with the state directory's files: damaged ones moved aside,
        transactions of an earlier boot discarded (each a sentence for the log)."""
        return list(self.journal.problems) + list(self.records.problems)

    def group_key(self, address: str) -> str:
        """The key operations are serialised on: the IOMMU group, else the device."""
        return group_key(self.inventory.device(address), address)

    def lock_keys(self, op: str, address: str) -> list[str]:
        """Every key an operation must hold, in the order to take them (lock_order).

        Bind and unbind touch one group. A reset may become VFIO's hot reset, which
        resets every function on the device's bus: it holds every group there.
        """
        keys = {self.group_key(address)}
        if op == "reset":
            keys.update(self.group_key(a) for a in self.resetter.bus_mates(address))
        return sorted(keys, key=lock_order)

    # -- handing a GPU over from the host's desktop -----------------------------------------
    @property
    def handover_timeout(self) -> float:
        """Seconds a forced bind waits for the desktop to let go of a GPU (the config's
        ``[handover] timeout``)."""
        return self.config.handover_timeout if self.config is not None \
            else DEFAULT_HANDOVER_TIMEOUT

    def releases(self, address: str, group: bool = True) -> list[Release]:
        """The GPUs a forced bind of *address* (resolved) would take from processes of
        the host (the desktop), with who holds them; InUse for a hard guard, and
        Quarantined (before any scan) when the bind would be refused for it."""
        self.check_quarantine(self.affected("bind", address, group))
        return releases_for_bind(self.inventory, address, group)

    def hand_over(self, releases: list[Release], timeout: float) -> None:
        """Ask the desktop to let go of these GPUs (a ``remove`` uevent of each card) and
        wait up to *timeout* seconds; InUse naming who still holds one."""
        hand_over(self.inventory, self.writer, releases, timeout)

    def mark_releasing(self, addresses: Iterable[str]) -> None:
        """Show these devices as being released by the desktop (property Releasing)."""
        self.inventory.mark_releasing(addresses)

    def clear_releasing(self, addresses: Iterable[str]) -> None:
        """The desktop's release of these devices is over (either way)."""
        self.inventory.clear_releasing(addresses)

    # -- what the host has ------------------------------------------------------------
    def rescan(self) -> None:
        """Re-read every PCI function and every holder from the host."""
        self.inventory.rescan()

    def reread(self, addresses: Iterable[str]) -> None:
        """Re-read these functions (after uevents); forget gone ones.

        Holders are not rescanned here (a bind makes several uevents): guests opening
        /dev/vfio nodes are reported through holders_changed().
        """
        self.inventory.reread(addresses)

    def devices(self) -> dict[str, PciDevice]:
        """The current snapshot, by address."""
        return self.inventory.devices()

    def members(self, address: str) -> list[str]:
        """Every function in the device's IOMMU group (itself when it has none)."""
        return self.inventory.members(address)

    def holders_changed(self) -> None:
        """Re-check who holds /dev/vfio nodes (a guest started or stopped)."""
        self.inventory.rescan_holders()

    def holder_pids(self) -> list[int]:
        """Every process that holds a group node now."""
        return self.inventory.holder_pids()

    def release_actions(self) -> list[tuple[str, str]]:
        """What to do now that guests let go of groups: [(address, on_release)].

        Each released group is reported once. Devices without a config entry keep
        their place ("keep").
        """
        released = self.inventory.take_released()
        actions = []
        for address, dev in sorted(self.inventory.devices().items()):
            if dev.iommu_group in released and dev.on_vfio:
                entry = self.config.entry_for(dev) if self.config else None
                actions.append((address, entry.on_release if entry else "keep"))
        return actions

    def set_listener(self, listener: "Callable[[list[str]], None] | None") -> None:
        """Call *listener* (on a worker thread) with the addresses an operation that
        finished in the background changed: one whose write outlived its timeout."""
        self.inventory.listener = listener

    # -- status -----------------------------------------------------------------------
    def mark_busy(self, addresses: Iterable[str]) -> None:
        """Show these devices as busy while an operation runs on them."""
        self.inventory.mark_busy(addresses)

    def clear_busy(self, addresses: Iterable[str]) -> None:
        """The operation on these devices is over."""
        self.inventory.clear_busy(addresses)

    def device_status(self, address: str) -> DeviceStatus:
        """Everything vfiod tells about one function."""
        return self._with_record(self.inventory.device_status(address))

    def status(self, addresses: Iterable[str] | None = None) -> list[DeviceStatus]:
        """Every function (or these), sorted by address."""
        return [self._with_record(s) for s in self.inventory.status(addresses)]
