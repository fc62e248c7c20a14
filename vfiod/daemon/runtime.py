"""The running daemon: the engine, the bus, the watchers and the order they start in.

Start: recover what a killed process left, scan, export the objects, watch, own the
name, then tell systemd READY=1. Operations run on worker threads, one at a time per
IOMMU group, different groups in parallel; a reset holds every group on its device's
bus (``engine.lock_keys``: VFIO's hot reset resets them all). The devices they touch
show as ``busy`` meanwhile. Stop (SIGTERM): refuse new operations, let running
ones finish for a while, release the name, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dbus_fast import BusType, NameFlag, RequestNameReply

from vfiod.config import Config, ConfigError, load_config
from vfiod.daemon import gc_freeze
from vfiod.daemon.auth import Authorizer
from vfiod.contract import BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH
from vfiod.daemon.bus import ObjectManagerBus
from vfiod.daemon.jobs import Job, Jobs
from vfiod.daemon.log import fields, log
from vfiod.daemon.notify import Notifier, status_line
from vfiod.daemon.service import RELEASING_SIGNATURE, DeviceInterface, ManagerInterface
from vfiod.daemon.status_reply import StatusReply
from vfiod.daemon.view import DeviceView, Snapshot
from vfiod.daemon.watch import Changes, HolderWatcher, UeventWatcher
from vfiod.engine import Engine
from vfiod.engine.checks import DeviceCheck
from vfiod.engine.plan import Plan
from vfiod.engine.progress import Cancelled
from vfiod.engine.transactions import group_lock_key
from vfiod.errors import Failed, InvalidArgument, VfiodError
from vfiod.records import DeviceStatus

#: How long running operations may go on after SIGTERM before they are abandoned
#: (a restarted daemon's recover() then rolls them back).
STOP_GRACE = 15.0
#: The longest ``wait`` option (seconds a job waits for a holder to let go): an hour.
MAX_WAIT = 3600


class StartupError(Exception):
    """The daemon cannot start (the name is taken, the bus is unreachable)."""


class Daemon:
    """vfiod's long-running state and its life cycle."""

    def __init__(self, engine: Engine, config_path: str | Path, *,
                 bus_address: str | None = None, bus_type: BusType = BusType.SYSTEM,
                 simulated: bool = False) -> None:
        self.engine = engine
        self.host = engine.host
        self.config_path = Path(config_path)
        self.bus_address = bus_address
        self.bus_type = bus_type
        self.simulated = simulated
        self.notifier = Notifier()
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vfiod-op")
        self.iommu_enabled = False
        #: What was wrong with the state directory at start (Engine.state_problems).
        self.state_problems: list[str] = []
        self.bus: ObjectManagerBus | None = None
        self.authorizer: Authorizer | None = None
        self.view: DeviceView | None = None  # exported at start
        self.uevents = UeventWatcher(self.host, self._apply_changes)
        # A holder's exit status, read when its pidfd fires, says how its guest run ended.
        self.holders = HolderWatcher(self.host, self._holders_changed, self._holder_pids,
                                     on_exit=self.engine.note_exit,
                                     operating_on=self._operating_on_group)
        self._locks: dict[str, asyncio.Lock] = {}
        #: Functions an operation is moving (one at a time: the group locks serialise
        #: operations), and those whose uevents arrived meanwhile: reread once when
        #: the operation ends.
        self._operating: set[str] = set()
        self._deferred: set[str] = set()
        self._running: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        #: Every Bind, Unbind and Reset runs as one of these (vfiod.daemon.jobs).
        self.jobs = Jobs(lambda: self.bus)

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Recover, scan, export, watch, own the name; then READY=1."""
        began = time.monotonic()
        loop = asyncio.get_running_loop()
        # A SIGTERM during start-up stops cleanly once start-up is over.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        # Start-up builds what the daemon keeps for its life: no collections meanwhile.
        with gc_freeze.building_long_lived_state():
            await self._build()
        assert self.bus is not None
        self.bus.announce = True  # from now on objects come and go with signals

        # An operation whose write outlived its timeout finishes on an engine thread.
        self.engine.set_listener(lambda addresses: loop.call_soon_threadsafe(
            self._finished_in_background, addresses))
        self.uevents.start()
        self.holders.start()
        # The name last: a client that sees it finds vfiod fully up.
        reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise StartupError(f"cannot own {BUS_NAME} on the bus ({reply.name.lower()}): "
                               "is another vfiod running?")
        status = status_line(self.statuses)
        self.notifier.ready(status)
        interval = self.notifier.start_watchdog(loop)
        log.info("ready on %s in %.2f s: %d PCI functions, %s%s%s",
                 self.bus_address or self.bus_type.name.lower() + " bus",
                 time.monotonic() - began, len(self.statuses), status,
                 "" if self.iommu_enabled else ", IOMMU off",
                 f", watchdog every {interval:g} s" if interval else "")

    async def _build(self) -> None:
        """Recover, scan, connect, export the objects (the first part of start)."""
        # Events that arrive while we recover and scan wait in the source's queue.
        self.uevents.open()
        touched = await asyncio.to_thread(self.engine.recover)
        if touched:
            log.warning("recovered %d device(s) an earlier vfiod left mid-operation: %s",
                        len(touched), ", ".join(touched))
        self.state_problems = self.engine.state_problems()
        if self.state_problems:
            # Each was logged where it was found; this says what it means for the user.
            log.warning("%d file(s) of the state directory set aside or discarded at start "
                        "(see above): no device was moved for them", len(self.state_problems))
        # Only now is the machine known: a config it contradicts stops the start
        # (ConfigError, with file:line).
        await asyncio.to_thread(self.engine.check_config, self.engine.config)
        # Guest runs left open by a vfiod that stopped (or a host that rebooted) end
        # now unless their holder still holds the device.
        await asyncio.to_thread(self._observe_guests)
        self.iommu_enabled = await asyncio.to_thread(lambda: self.engine.iommu_enabled)

        if self.bus_address is not None:
            bus = ObjectManagerBus(bus_address=self.bus_address)
        else:
            bus = ObjectManagerBus(bus_type=self.bus_type)
        try:
            self.bus = await bus.connect()
        except Exception as exc:  # OSError, AuthError, InvalidAddressError ...
            where = self.bus_address or f"{self.bus_type.name.lower()} bus"
            raise StartupError(f"cannot connect to D-Bus ({where}): {exc}") from None
        self.authorizer = Authorizer(self.bus)
        self.authorizer.install()
        manager = ManagerInterface(self)
        view = self.view = DeviceView(
            self.bus, manager, self._snapshot,
            lambda status, name: DeviceInterface(self, status, name), self._on_synced)
        self.bus.export(MANAGER_PATH, manager)
        # Status from a body marshalled once per published list (status_reply.py).
        StatusReply(self.bus, lambda: view.statuses).install()
        await view.sync()

    def request_stop(self) -> None:
        """Begin a clean stop (SIGTERM, SIGINT)."""
        if not self._stopping:
            log.info("stopping")
            self._stopping = True
            self.notifier.stopping()
            self._stopped.set()

    async def run(self) -> None:
        """Start, serve until asked to stop, then stop cleanly."""
        try:
            await self.start()
            await self._stopped.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Let running operations end (up to STOP_GRACE), release the name, disconnect."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        self.notifier.stop_watchdog()
        if self._running:
            log.info("waiting up to %g s for %d running operation(s)", STOP_GRACE,
                     len(self._running))
            _, pending = await asyncio.wait(self._running, timeout=STOP_GRACE)
            if pending:
                log.warning("abandoning %d operation(s) still blocked in the kernel; the next "
                            "start rolls them back", len(pending))
        self.uevents.stop()
        self.holders.stop()
        for task in list(self._background):
            task.cancel()
        if self.bus is not None and self.bus.connected:
            try:
                await asyncio.wait_for(self.bus.release_name(BUS_NAME), 2.0)
            except Exception as exc:  # the bus may be gone already
                log.info("could not release %s: %s", BUS_NAME, exc)
            self.bus.disconnect()
        # Blocked writes keep their threads; do not wait for them at exit.
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def abandoned(self) -> bool:
        """True when operations were still running at the end of shutdown."""
        return any(not t.done() for t in self._running)

    # -- what clients see -------------------------------------------------------------
    @property
    def statuses(self) -> list[DeviceStatus]:
        """The last published status of every function (empty before start)."""
        return self.view.statuses if self.view is not None else []

    async def republish(self, addresses: Iterable[str] | None = None) -> None:
        """Bring the exported objects in step with the engine (once they exist): these
        functions' objects, or every one."""
        if self.view is not None:
            await self.view.sync(addresses)

    # -- operations -------------------------------------------------------------------
    async def authorize(self) -> None:
        """Return when the current D-Bus caller may manage devices; AccessDenied if not."""
        assert self.authorizer is not None
        await self.authorizer.check()

    async def operate(self, op: str, device: str, *, group: bool = True,
                      force: bool = False, wait: int = 0, clear: bool = False) -> Any:
        """Run bind, unbind or reset as a job and answer when it is done.

        Returns what the engine returns (the addresses that moved, or the reset method),
        or raises its error. The job is the daemon's: the caller going away (or its call
        timing out) leaves it running.
        """
        job = await self.start_job(op, device, group=group, force=force, wait=wait,
                                   clear=clear, as_job=False)
        return await asyncio.shield(job.outcome)

    async def start_job(self, op: str, device: str, *, group: bool = True,
                        force: bool = False, wait: int = 0, clear: bool = False,
                        dry_run: bool = False, as_job: bool = True) -> Any:
        """Start bind, unbind or reset as a job (worker thread, serialised per IOMMU
        group); its object path (the Job itself when *as_job* is False). *clear*: lift
        the device's quarantine first (Reset); *dry_run*: the job builds the plan and
        ends with the real call's answer, writing nothing.

        The device is resolved first: InvalidArgument and NoSuchDevice answer the call.
        """
        if self._stopping:
            raise Failed("vfiod is stopping; try again when it is back")
        if wait > MAX_WAIT:
            raise InvalidArgument(f"option 'wait' is at most {MAX_WAIT} seconds, not {wait}")
        def resolve() -> tuple[str, list[str]]:  # one hop to the engine's thread, not two
            address = self.engine.resolve(device)
            return address, self.engine.affected(op, address, group)

        address, devices = await asyncio.to_thread(resolve)

        async def run(job: Job) -> Any:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                keys = await asyncio.to_thread(self.engine.lock_keys, op, address)
                if any(k in self._locks and self._locks[k].locked() for k in keys):
                    self.jobs.set_phase(job, "queued", "other operations on the same IOMMU "
                                        "group to finish")
                async with self._hold_groups(op, address, keys):
                    if self._stopping:  # asked to stop while waiting for the group
                        raise Failed("vfiod is stopping; try again when it is back")
                    job.running = True
                    self.jobs.set_phase(job, "starting")
                    if job.cancel_requested:
                        raise Cancelled(f"{op} cancelled before it started: nothing was "
                                        "changed")
                    if dry_run:
                        self.jobs.set_phase(job, "checking (a dry run: nothing is changed)")
                        plan = await asyncio.to_thread(functools.partial(
                            self.engine.plan, op, address, group=group, force=force))
                        return plan.answer()
                    return await self._operate_locked(op, address, group, force, job, wait,
                                                      clear)
            finally:
                self._running.discard(task)

        job = self.jobs.start(op, devices, run)
        return job.path if as_job else job

    def running_jobs(self) -> list[str]:
        """The object paths of the jobs still running."""
        return self.jobs.running()

    def cancel_job(self, path: str) -> None:
        """Ask a running job to stop at its next safe step (vfiod.daemon.jobs)."""
        self.jobs.cancel(path)

    async def plan(self, op: str, device: str, *, group: bool = True,
                   force: bool = False) -> Plan:
        """The dry run of bind, unbind or reset: its plan, built as the real call would
        build it (after any operation running on its groups), with no write."""
        if self._stopping:
            raise Failed("vfiod is stopping; try again when it is back")
        address = await asyncio.to_thread(self.engine.resolve, device)
        async with self._hold_groups(op, address):
            return await asyncio.to_thread(functools.partial(
                self.engine.plan, op, address, group=group, force=force))

    async def check_devices(self, devices: list[str]) -> list[DeviceCheck]:
        """CheckDevices: every problem with handing these devices to a guest (reads only)."""
        return await asyncio.to_thread(self.engine.check_devices, devices)

    @contextlib.asynccontextmanager
    async def _hold_groups(self, op: str, address: str,
                           keys: list[str] | None = None) -> AsyncIterator[None]:
        """Hold the lock of every group the operation touches (``engine.lock_keys``, or
        *keys* the caller has just asked it for).

        The locks are taken one by one in the engine's one order, so two operations
        that need overlapping sets never each wait for the other. A bus that gained a
        group while we waited (a hot-add) makes us let go and take the new set.
        """
        try:
            while True:
                if keys is None:
                    keys = await asyncio.to_thread(self.engine.lock_keys, op, address)
                async with contextlib.AsyncExitStack() as held:
                    for key in keys:
                        await held.enter_async_context(
                            self._locks.setdefault(key, asyncio.Lock()))
                    now = await asyncio.to_thread(self.engine.lock_keys, op, address)
                    if set(now) <= set(keys):
                        yield
                        return
                keys = now  # the set grew while we waited: take the new one
        finally:
            self.holders.resume()  # the holder events our groups' nodes had meanwhile

    def _operating_on_group(self, group: int) -> bool:
        """Whether an operation holds this IOMMU group's lock now."""
        lock = self._locks.get(group_lock_key(group))
        return lock is not None and lock.locked()

    async def _operate_locked(self, op: str, address: str, group: bool, force: bool,
                              job: Job, wait: int = 0, clear: bool = False) -> Any:
        loop = asyncio.get_running_loop()
        def mark_busy() -> list[str]:
            affected = self.engine.affected(op, address, group)
            self.engine.mark_busy(affected)
            return affected

        affected = await asyncio.to_thread(mark_busy)
        self._operating.update(affected)
        await self.republish(affected)
        extra = fields(address, op)
        log.info("%s %s%s%s: started", op, address, "" if group or op == "reset" else
                 " (this function only)", " (forced)" if force else "", extra=extra)
        began = time.monotonic()
        try:
            if op == "bind" and force:
                await self._hand_over(address, group, job)
            result = await loop.run_in_executor(
                self.executor, functools.partial(
                    self.engine.run, op, address, group=group, force=force, clear=clear,
                    progress=self.jobs.progress(job, loop), cancelled=job.cancelled,
                    wait=float(wait)))
        except VfiodError as err:
            log.warning("%s %s failed: %s", op, address, err, extra=extra)
            raise
        finally:
            done = set(affected)
            self._operating -= done
            deferred, self._deferred = self._deferred & done, self._deferred - done

            def clear_busy() -> None:
                self.engine.clear_busy(affected)
                if deferred:
                    self.engine.reread(deferred)

            await asyncio.to_thread(clear_busy)
            await self.republish([*affected, *(deferred - set(affected))])
        took = time.monotonic() - began
        shown = result if isinstance(result, str) else ", ".join(result) or "nothing to move"
        log.info("%s %s: done in %.2f s: %s", op, address, took, shown, extra=extra)
        return result

    async def _hand_over(self, address: str, group: bool, job: Job) -> None:
        """Before a forced bind: when the host's desktop holds a GPU of it, say so on the
        bus (signal Releasing, property Releasing), ask the desktop to let go (a remove
        uevent of the card) and wait up to the config's timeout; InUse naming who
        still holds it then. (A job's phase "waiting for the desktop to release".)"""
        loop = asyncio.get_running_loop()
        releases = await loop.run_in_executor(
            self.executor, functools.partial(self.engine.releases, address, group))
        if not releases:
            return
        timeout = self.engine.handover_timeout
        addresses = [r.address for r in releases]
        await asyncio.to_thread(self.engine.mark_releasing, addresses)
        await self.republish(addresses)
        assert self.bus is not None
        for release in releases:
            log.info("%s: asking the desktop to release it: held by %s; waiting up to %g s",
                     release.address, ", ".join(release.holder_names), timeout,
                     extra=fields(release.address, "bind"))
            self.bus.send_signal(MANAGER_PATH, MANAGER_INTERFACE, "Releasing",
                                 RELEASING_SIGNATURE,
                                 [release.address, release.holder_names,
                                  round(timeout * 1000)])
        self.jobs.set_phase(job, "asking the desktop to release the GPU",
                            "; ".join(", ".join(r.holder_names) + f" to close {r.address}"
                                      for r in releases))
        try:
            await loop.run_in_executor(
                self.executor, functools.partial(self.engine.hand_over, releases, timeout))
        finally:
            await asyncio.to_thread(self.engine.clear_releasing, addresses)
            await self.republish(addresses)

    def _finished_in_background(self, addresses: list[str]) -> None:
        """A stalled operation finished when the kernel returned: publish its outcome."""
        if not self._stopping:
            self._spawn(self.republish(addresses), f"publish {', '.join(addresses)}")

    def _spawn(self, coro: Any, name: str) -> None:
        """Run an internal operation in the background, logging its failure."""
        async def guarded() -> None:
            try:
                await coro
            except VfiodError as err:
                log.warning("%s: %s", name, err)
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- configuration ----------------------------------------------------------------
    async def reload_config(self) -> Config:
        """Reread the config file; a bad one is refused (ConfigError) and the old one stays."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
                # Checked against the machine too; a refused config changes nothing.
                await asyncio.to_thread(self.engine.set_config, config)
            except ConfigError as err:
                log.error("refusing the new configuration, keeping the running one: %s", err)
                raise
            finally:
                self.notifier.ready_again()
            log.info("configuration reloaded from %s: %d device entr%s", self.config_path,
                     len(config.devices), "y" if len(config.devices) == 1 else "ies")
        await self.republish()  # names may have changed
        return config

    def _reload_on_signal(self) -> None:
        log.info("SIGHUP: rereading %s", self.config_path)

        async def reload() -> None:
            with contextlib.suppress(ConfigError):  # logged by reload_config
                await self.reload_config()

        self._spawn(reload(), "reload")

    # -- reacting to the host ---------------------------------------------------------
    async def _apply_changes(self, changes: Changes) -> None:
        """Uevents arrived: reread what they name, republish, claim hot-added devices.

        A function an operation is moving is reread when the operation ends, once: its
        own writes make most of these uevents, and rereading it meanwhile would only
        compete with the operation (it shows as busy until then anyway).
        """
        if not changes.rescan and self._operating:
            moving = {a for a in changes.refresh if a in self._operating}
            if moving:
                self._deferred |= moving
                changes = Changes(refresh=changes.refresh - moving)
                if not changes:
                    return
        def reread() -> list[str]:
            if changes.rescan:
                self.engine.rescan()
            else:
                self.engine.reread(changes.refresh)
            return [a for a in sorted(changes.added) if self.engine.wants_vfio(a)]

        claims = await asyncio.to_thread(reread)
        await self.republish(None if changes.rescan else changes.refresh)
        for address in claims:
            if self._stopping:
                break
            log.info("%s: hot-added and configured with boot = \"vfio\": claiming it",
                     address, extra=fields(address, "bind"))
            self._spawn(self.operate("bind", address), f"claim {address}")

    def _snapshot(self, addresses: set[str] | None) -> Snapshot:
        """These functions' (or every function's) status and config-file names (on a
        worker thread)."""
        return self.engine.status(addresses), self.engine.config_names(addresses)

    def _holder_pids(self) -> list[int]:
        return self.engine.holder_pids()

    async def _holders_changed(self) -> None:
        """A /dev/vfio node was opened or closed, or a holder died: recheck, then release."""
        def recheck() -> list[tuple[str, str]]:
            self._observe_guests()
            return self.engine.release_actions()

        actions = await asyncio.to_thread(recheck)
        await self.republish()
        for address, action in actions:
            if action == "keep" or self._stopping:
                continue
            log.info("%s: its guest let go; on_release = %s", address, action,
                     extra=fields(address, action))
            if action == "reset":
                self._spawn(self.operate("reset", address), f"reset {address} on release")
            elif action == "host":
                self._spawn(self.operate("unbind", address), f"unbind {address} on release")

    def _observe_guests(self) -> None:
        """Recheck who holds which group and record guest runs starting and ending (on a
        worker thread)."""
        self.engine.holders_changed()
        self.engine.observe_guests()

    def _on_synced(self, statuses: list[DeviceStatus]) -> None:
        self.notifier.status(status_line(statuses))
