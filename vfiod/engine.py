"""The binding engine: moves whole IOMMU groups between vfio-pci and host drivers.

Plain synchronous code over the Host boundary. Every operation is a transaction over
an IOMMU group: resolve the device, plan over the group (endpoints move together,
bridges stay), check the guards, record where every member was, apply with
driver_override + unbind + drivers_probe, verify each member's ``driver`` link, and on
any failure put every member back. A process killed mid-way leaves a transaction file;
``recover()`` at the next start puts those members back.

Callers serialise operations per ``group_key`` (the daemon runs them on worker
threads, one group at a time) and may run different groups in parallel.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vfiod.address import bus_of, check_device_argument, is_address
from vfiod.discovery import Scanner, iommu_enabled
from vfiod.errors import (ALL_ERRORS, Failed, GroupNotViable, HostWriteError, InUse, InvalidArgument,
                          ModuleLoadError, NoSuchDevice, ResetFailed, VfiodError)
from vfiod.guards import check_usages, find_usages, node_paths
from vfiod.host import paths
from vfiod.host.base import DEFAULT_WRITE_TIMEOUT, Host, Process
from vfiod.model import VFIO_DRIVER, PciDevice, is_vfio_driver
from vfiod.records import DeviceStatus, State
from vfiod.state import MemberRecord, StateStore, Transaction

if TYPE_CHECKING:
    from vfiod.config import Config

log = logging.getLogger("vfiod.engine")

IOMMU_OFF_HELP = (
    "the IOMMU is off: enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup and "
    "boot with intel_iommu=on (Intel; AMD enables it by default), then check with "
    "`vfioctl doctor`")


def _public(exc: Exception, note: str) -> VfiodError:
    """The error a client sees for a failed transaction: its public class, with a note."""
    public = next((c for c in type(exc).__mro__ if c in ALL_ERRORS), Failed)
    return public(f"{exc} ({note})")


def _reset_failure(method: str, err: int) -> str:
    """``bus: ENOTTY (another function shares the bus)``: one method's failure, explained."""
    name = errno_mod.errorcode.get(err, str(err))
    if method == "bus" and err in (errno_mod.ENOTTY, errno_mod.EINVAL):
        # ENOTTY from the reset, EINVAL when selecting it: the kernel's bus-reset probe
        # fails while other functions sit on the same bus.
        return f"{method}: {name} (another function shares the bus)"
    return f"{method}: {name}"


SLOT_HINT = "bind the whole slot (the GPU and its audio) to vfio-pci to reset it together"


class Engine:
    """What vfiod knows and does about the host's PCI functions."""

    def __init__(self, host: Host, state_dir: str | Path, config: "Config | None" = None,
                 write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        self.host = host
        self.store = StateStore(state_dir)
        self.config = config
        self.write_timeout = write_timeout
        self.scanner = Scanner(host)
        self._lock = threading.RLock()
        self._devices: dict[str, PciDevice] = {}
        self._scanned = False
        self._busy: set[str] = set()
        self._errors: dict[str, str] = {}
        self._group_holders: dict[int, list[Process]] = {}
        self._host_holders: dict[str, list[Process]] = {}
        self._used_by: dict[str, str] = {}
        self._released: set[int] = set()
        #: Called with addresses whose state may have changed (from any thread).
        self.on_change: Callable[[list[str]], None] | None = None

    # -- snapshot ---------------------------------------------------------------------
    @property
    def iommu_enabled(self) -> bool:
        """True when the kernel has IOMMU groups."""
        return iommu_enabled(self.host)

    def set_config(self, config: "Config | None") -> None:
        """Use a new config (names, on_release) from now on."""
        self.config = config

    def rescan(self) -> None:
        """Re-read every PCI function and every holder from the host."""
        devices = self.scanner.scan()
        with self._lock:
            self._devices = devices
            self._scanned = True
        self._scan_holders()
        self._scan_usages()

    def refresh(self, address: str) -> None:
        """Re-read one function (after a uevent); forget it when it is gone.

        Holders are not rescanned here (a bind makes several uevents): guests opening
        /dev/vfio nodes are reported through holders_changed().
        """
        self._reread([address])

    def _reread(self, addresses: Iterable[str], *, holders: bool = False
                ) -> dict[str, PciDevice]:
        addresses = list(addresses)
        fresh = self.scanner.read(addresses)
        with self._lock:
            for a in addresses:
                if a in fresh:
                    self._devices[a] = fresh[a]
                else:
                    self._devices.pop(a, None)
                    self._errors.pop(a, None)
        if holders:
            self._scan_holders()
            self._scan_usages()
        return fresh

    def devices(self) -> dict[str, PciDevice]:
        """The current snapshot, by address."""
        with self._lock:
            if not self._scanned:
                self.rescan()
            return dict(self._devices)

    def _scan_holders(self) -> None:
        devices = self.devices()
        groups = {d.iommu_group for d in devices.values()
                  if d.on_vfio and d.iommu_group is not None}
        host_nodes = {d.address: node_paths(self.host, d)["drm"] for d in devices.values()
                      if d.children.drm or d.children.nvidia_minor is not None}
        nodes = [paths.group_node(g) for g in groups]
        nodes += [p for lst in host_nodes.values() for p in lst]
        found = self._holders(nodes)
        with self._lock:
            before = {g for g, procs in self._group_holders.items() if procs}
            self._group_holders = {g: found[paths.group_node(g)] for g in groups
                                   if found.get(paths.group_node(g))}
            now = set(self._group_holders)
            self._released |= before - now
            self._released -= now
            self._host_holders = {
                a: list({p.pid: p for n in nodes for p in found.get(n, [])}.values())
                for a, nodes in host_nodes.items()}

    def _holders(self, paths: Iterable[str]) -> dict[str, list[Process]]:
        """Who holds these nodes open, except vfiod itself (a VFIO hot reset holds the
        group fds for a moment; that is no guest)."""
        me = os.getpid()
        found = {}
        for path, procs in self.host.holders(paths).items():
            others = [p for p in procs if p.pid != me]
            if others:
                found[path] = others
        return found

    def holders_changed(self) -> None:
        """Re-check who holds /dev/vfio nodes (a guest started or stopped)."""
        self._scan_holders()

    def _scan_usages(self) -> None:
        """What the host uses each device on a host driver for (the guards' findings)."""
        on_host = [d for d in self.devices().values() if d.driver and not d.on_vfio]
        found: dict[str, list[str]] = {}
        for usage in find_usages(self.host, on_host):
            found.setdefault(usage.address, []).append(usage.reason)
        with self._lock:
            self._used_by = {a: "; ".join(reasons) for a, reasons in found.items()}

    # -- resolving --------------------------------------------------------------------
    def resolve(self, arg: str) -> str:
        """A device argument (address, short address, config name) -> full address."""
        value = check_device_argument(arg)  # InvalidArgument before any I/O
        devices = self.devices()
        if is_address(value):
            if value in devices:
                return value
            if self.host.exists(paths.device_dir(value)):  # hot-added since the last scan
                self.refresh(value)
                return value
            raise NoSuchDevice(f"{value}: no such PCI device")
        return self._resolve_name(value, devices)

    def _resolve_name(self, name: str, devices: dict[str, PciDevice]) -> str:
        entries = [e for e in (self.config.devices if self.config else []) if e.name == name]
        if not entries:
            raise InvalidArgument(
                f"{name!r} is neither a PCI address (such as 0000:06:00.0) nor a device name "
                "from the config file")
        entry = entries[0]
        matches = [a for a, d in sorted(devices.items()) if self.config.match(entry, d)]
        if not matches:
            raise NoSuchDevice(f"{name}: no PCI device matches {entry.match!r}")
        if len(matches) > 1:
            raise InvalidArgument(
                f"{name}: {entry.match!r} matches {len(matches)} devices "
                f"({', '.join(matches)}); match by address in the config file")
        return matches[0]

    def group_key(self, address: str) -> str:
        """The key operations are serialised on: the IOMMU group, else the device."""
        dev = self.devices().get(address)
        if dev is not None and dev.iommu_group is not None:
            return f"group-{dev.iommu_group}"
        return address

    def _fresh(self, address: str) -> tuple[PciDevice, list[PciDevice]]:
        """Re-read a device and every member of its IOMMU group from the host."""
        dev = self._reread([address]).get(address)
        if dev is None:
            raise NoSuchDevice(f"{address}: no such PCI device")
        if dev.iommu_group is None:
            return dev, [dev]
        members = self.scanner.group_members(dev.iommu_group)
        fresh = self._reread(members)
        return fresh.get(address, dev), [fresh[a] for a in sorted(fresh)]

    # -- bind / unbind ----------------------------------------------------------------
    def bind(self, device: str, *, group: bool = True, force: bool = False) -> list[str]:
        """Put a device (and by default every endpoint of its IOMMU group) on vfio-pci.

        Returns the addresses that moved. Raises InUse when a guard refuses (``force``
        overrides the soft ones), GroupNotViable for a device without a group or a
        partial group, Failed (after rolling back) when a step fails.
        """
        address = self.resolve(device)
        dev, members = self._fresh(address)
        if dev.iommu_group is None:
            raise GroupNotViable(f"{address}: has no IOMMU group: {IOMMU_OFF_HELP}")
        if dev.is_bridge:
            raise InvalidArgument(f"{address}: is a PCI bridge; bridges stay on their driver "
                                  "and never need binding")
        endpoints = [m for m in members if m.is_endpoint]
        if group:
            targets = [m for m in endpoints if not m.on_vfio]
        else:
            targets = [] if dev.on_vfio else [dev]
            blocking = [m for m in endpoints if m.address != address and m.driver
                        and not m.on_vfio and m.driver != "pci-stub"]
            if targets and blocking:
                names = ", ".join(f"{m.address} ({m.driver})" for m in blocking)
                raise GroupNotViable(
                    f"{address}: IOMMU group {dev.iommu_group} would not be viable: {names} "
                    "would stay on host drivers; bind the whole group instead")
        if not targets:
            return []
        check_usages(self.host, targets, force=force, action="bind it to vfio-pci")
        self._ensure_vfio_module()
        self.store.remember_host_drivers(
            {m.address: m.driver for m in targets if m.driver and not m.on_vfio})
        return self._transaction("bind", f"group-{dev.iommu_group}", targets,
                                 self._move_to_vfio)

    def unbind(self, device: str, *, group: bool = True) -> list[str]:
        """Return a device (and by default its group) from vfio-pci to its host driver.

        The host driver is the one recorded when vfiod bound it; without a record, the
        kernel's best match (its module loaded by modalias when needed). Raises InUse,
        naming the process, while a guest holds the group: unbind is never written then.
        """
        address = self.resolve(device)
        dev, members = self._fresh(address)
        if group:
            targets = [m for m in members if m.is_endpoint and m.on_vfio]
        else:
            targets = [dev] if dev.on_vfio else []
        if not targets:
            return []
        self._check_not_held(dev, "unbind it")
        key = f"group-{dev.iommu_group}" if dev.iommu_group is not None else address
        return self._transaction("unbind", key, targets, self._move_to_host)

    def _check_not_held(self, dev: PciDevice, action: str) -> None:
        """Refuse while a process holds the group node or a member's vfio device node.

        Writing ``unbind`` then would block in the kernel until the guest exits.
        """
        if dev.iommu_group is None:
            return
        nodes = [paths.group_node(dev.iommu_group)]
        for member in self.scanner.group_members(dev.iommu_group):
            nodes += [paths.vfio_device_node(n) for n in
                      self.host.listdir(paths.device_file(member, "vfio-dev"))]
        held = self._holders(nodes)
        if held:
            who = ", ".join(f"{p} through {node}" for node in nodes for p in held.get(node, []))
            raise InUse(f"{dev.address}: refusing to {action}: IOMMU group {dev.iommu_group} "
                        f"is in use by {who}")

    def _transaction(self, operation: str, key: str, targets: list[PciDevice],
                     step: Callable[[PciDevice], None]) -> list[str]:
        txn = Transaction(key=key, operation=operation, members=[
            MemberRecord(address=m.address, driver=m.driver, driver_override=m.driver_override)
            for m in targets])
        self.store.begin(txn)
        moved: list[str] = []
        try:
            for member in targets:
                step(member)
                moved.append(member.address)
        except Exception as exc:  # a BaseException (a kill) leaves the journal for recover()
            problems = self._roll_back(txn)
            if not problems:
                self.store.end(key)
            self._record_error([m.address for m in targets], str(exc))
            self._reread((m.address for m in targets), holders=True)
            if problems:
                raise Failed(f"{exc}; rolling back also failed: {'; '.join(problems)}") from None
            raise _public(exc, "every device was put back where it was") from None
        self.store.end(key)
        with self._lock:
            for a in moved:
                self._errors.pop(a, None)
        self._reread((m.address for m in targets), holders=True)
        return moved

    def _write(self, path: str, value: str, device: str) -> None:
        self.host.write_attr(path, value, timeout=self.write_timeout, device=device)

    def _driver(self, address: str) -> str | None:
        return self.host.link_name(paths.device_file(address, "driver"))

    def _move_to_vfio(self, dev: PciDevice) -> None:
        a = dev.address
        self._write(paths.device_file(a, "driver_override"), VFIO_DRIVER, a)
        if self._driver(a):
            self._write(paths.device_file(a, "driver/unbind"), a, a)
        self._write(paths.drivers_probe(), a, a)
        now = self._driver(a)
        if now != VFIO_DRIVER:
            # drivers_probe succeeds even when nothing binds: the link is the truth.
            raise Failed(f"{a}: vfio-pci did not bind it (driver now: {now or 'none'})")

    def _move_to_host(self, dev: PciDevice) -> None:
        a = dev.address
        want = self.store.host_driver(a)
        self._write(paths.device_file(a, "driver_override"), "\n", a)
        if self._driver(a):
            self._write(paths.device_file(a, "driver/unbind"), a, a)
        got = self._probe_host_driver(a, want, dev.modalias)
        if want and got != want:
            raise Failed(f"{a}: its host driver {want} did not bind it "
                         f"(driver now: {got or 'none'})")

    def _probe_host_driver(self, a: str, want: str | None, modalias: str) -> str | None:
        """Bind the recorded driver, else let the kernel choose; load modules as needed."""
        if want and not self.host.exists(paths.driver_dir(want)) and modalias:
            self._load_quietly(modalias)  # loading binds the device by itself
        if want and not self._driver(a) and self.host.exists(paths.driver_dir(want)):
            try:
                self._write(paths.driver_file(want, "bind"), a, a)
            except HostWriteError as exc:
                log.info("%s: direct bind to %s failed (%s); asking the kernel", a, want, exc)
        if not self._driver(a):
            self._write(paths.drivers_probe(), a, a)
        if not self._driver(a) and modalias:
            self._load_quietly(modalias)
            if not self._driver(a):
                self._write(paths.drivers_probe(), a, a)
        return self._driver(a)

    def _load_quietly(self, name: str) -> None:
        try:
            self.host.load_module(name)
        except ModuleLoadError as exc:
            log.info("%s", exc)

    def _ensure_vfio_module(self) -> None:
        if not self.host.exists(paths.driver_dir(VFIO_DRIVER)):
            self.host.load_module(VFIO_DRIVER)
            if not self.host.exists(paths.driver_dir(VFIO_DRIVER)):
                raise Failed("vfio-pci is not available: modprobe vfio-pci loaded no driver")

    # -- rollback and recovery --------------------------------------------------------
    def _roll_back(self, txn: Transaction) -> list[str]:
        """Put every member back where the transaction found it; return what failed."""
        problems = []
        for record in reversed(txn.members):
            try:
                self._restore(record)
            except VfiodError as exc:
                problems.append(str(exc))
        return problems

    def _restore(self, record: MemberRecord) -> None:
        a = record.address
        if not self.host.exists(paths.device_dir(a)):
            return  # removed meanwhile: nothing to put back
        current = self._driver(a)
        override = self.host.read_text(paths.device_file(a, "driver_override"))
        override = None if override in ("(null)", "") else override
        if current == record.driver and override == record.driver_override:
            return
        self._write(paths.device_file(a, "driver_override"), record.driver_override or "\n", a)
        if current == record.driver:
            return
        if current:
            self._write(paths.device_file(a, "driver/unbind"), a, a)
        if record.driver is None:
            return
        if is_vfio_driver(record.driver):
            self._ensure_vfio_module()
        modalias = self.host.read_text(paths.device_file(a, "modalias")) or ""
        got = self._probe_host_driver(a, record.driver, modalias)
        if got != record.driver:
            raise Failed(f"{a}: could not put it back on {record.driver} "
                         f"(driver now: {got or 'none'})")

    def recover(self) -> list[str]:
        """Put back the members of transactions a killed process left unfinished."""
        touched: list[str] = []
        for txn in self.store.unfinished():
            log.warning("recovering an unfinished %s of %s", txn.operation, txn.key)
            problems = self._roll_back(txn)
            touched += [m.address for m in txn.members]
            if problems:
                self._record_error([m.address for m in txn.members], "; ".join(problems))
                log.error("recovery of %s incomplete: %s", txn.key, "; ".join(problems))
            else:
                self.store.end(txn.key)
        self.rescan()
        return touched

    # -- reset ------------------------------------------------------------------------
    def reset(self, device: str, *, force: bool = False) -> str:
        """Reset a device with the kernel's methods, best first; return the one that worked.

        A method that errs or leaves the device dead (config space all ones) is followed
        by the next. Refused while a guest holds the group, or while the host uses it.
        """
        address = self.resolve(device)
        dev, _ = self._fresh(address)
        self._check_not_held(dev, "reset it")
        if dev.driver and not dev.on_vfio:
            check_usages(self.host, [dev], force=force, action="reset it")
        if not dev.reset_methods:
            raise ResetFailed(f"{address}: the kernel offers no reset method for this device")
                # One listed method is already the selection: writing reset_method would make
        # the kernel probe it again (and refuse bus with EINVAL while a sibling function
        # shares the bus), and writing "default" afterwards would probe it away for good.
        selectable = len(dev.reset_methods) > 1
        selected = False
        failures: list[str] = []
        worked: str | None = None
        try:
            for method in dev.reset_methods:
                try:
                    if selectable:
                        self._write(paths.device_file(address, "reset_method"), method, address)
                        selected = True
                    self._write(paths.device_file(address, "reset"), "1", address)
                except HostWriteError as exc:
                    failures.append(_reset_failure(method, exc.errno))
                    continue
                if self._config_alive(address):
                    worked = method
                    break
                failures.append(f"{method}: the device did not come back "
                                "(config space reads all ones)")
        finally:
            if selected:  # a refused selection leaves the kernel's selection as it was
                try:
                    self._write(paths.device_file(address, "reset_method"), "default", address)
                except VfiodError as exc:
                    log.warning("%s: could not restore reset_method: %s", address, exc)
            self._reread([address])
        if worked is None:
            worked = self._hot_reset(dev, failures)
        if worked is None:
            message = f"{address}: no reset method worked: " + "; ".join(failures)
            self._record_error([address], message)
            raise ResetFailed(message)
        with self._lock:
            self._errors.pop(address, None)
        return worked

    def _hot_reset(self, dev: PciDevice, failures: list[str]) -> str | None:
        """Reset the device's whole bus through VFIO when the kernel refused it alone.

        A GPU's bus reset fails per function while its HDMI audio shares the bus; VFIO's
        hot reset resets every function of the bus, given all their groups, so it needs
        all of them on vfio-pci and free. Returns "bus" when it worked; otherwise adds
        why to *failures* (with what to do about it) and returns None.
        """
        address = dev.address
        bus = bus_of(address)
        on_bus = self._reread([a for a in self.devices() if bus_of(a) == bus])
        if len(on_bus) < 2:
            return None  # alone on its bus: the kernel's own bus reset was the whole story
        if not all(d.on_vfio for d in on_bus.values()):
            failures.append(SLOT_HINT)
            return None
        for group in sorted({d.iommu_group for d in on_bus.values()
                             if d.iommu_group is not None and d.iommu_group != dev.iommu_group}):
            other = next(d for d in on_bus.values() if d.iommu_group == group)
            self._check_not_held(other, f"reset {address} (they share a bus)")
        try:
            reset = self.host.vfio_hot_reset(address)
        except HostWriteError as exc:
            failures.append(f"bus through VFIO hot reset: "
                            f"{errno_mod.errorcode.get(exc.errno, str(exc.errno))}")
            return None
        finally:
            self._reread(on_bus)
        if not self._config_alive(address):
            failures.append("bus through VFIO hot reset: the device did not come back "
                            "(config space reads all ones)")
            return None
        with self._lock:
            for a in reset:
                self._errors.pop(a, None)
        log.info("%s: reset the bus %s through VFIO's hot reset (%s)", address, bus,
                 ", ".join(reset))
        return "bus"

    def _config_alive(self, address: str) -> bool:
        data = self.host.read_bytes(paths.device_file(address, "config"), 2)
        return not (data is not None and data == b"\xff\xff")

    # -- guests letting go ------------------------------------------------------------
    def release_actions(self) -> list[tuple[str, str]]:
        """What to do now that guests let go of groups: [(address, on_release)].

        Each released group is reported once. Devices without a config entry keep
        their place ("keep").
        """
        with self._lock:
            released, self._released = self._released, set()
        actions = []
        for address, dev in sorted(self.devices().items()):
            if dev.iommu_group in released and dev.on_vfio:
                entry = self.config.entry_for(dev) if self.config else None
                actions.append((address, entry.on_release if entry else "keep"))
        return actions

    # -- status -----------------------------------------------------------------------
    def mark_busy(self, addresses: Iterable[str]) -> None:
        """Show these devices as busy while an operation runs on them."""
        with self._lock:
            self._busy.update(addresses)

    def clear_busy(self, addresses: Iterable[str]) -> None:
        """The operation on these devices is over."""
        with self._lock:
            self._busy.difference_update(addresses)

    def _record_error(self, addresses: Iterable[str], message: str) -> None:
        with self._lock:
            for a in addresses:
                self._errors[a] = message

    def members(self, address: str) -> list[str]:
        """Every function in the device's IOMMU group (itself when it has none)."""
        devices = self.devices()
        dev = devices.get(address)
        if dev is None or dev.iommu_group is None:
            return [address]
        return sorted(a for a, d in devices.items() if d.iommu_group == dev.iommu_group)

    def device_status(self, address: str) -> DeviceStatus:
        """Everything vfiod tells about one function."""
        dev = self.devices().get(address)
        if dev is None:
            raise NoSuchDevice(f"{address}: no such PCI device")
        return self._status(dev)

    def status(self) -> list[DeviceStatus]:
        """Every function, sorted by address."""
        return [self._status(d) for _, d in sorted(self.devices().items())]

    def _status(self, dev: PciDevice) -> DeviceStatus:
        with self._lock:
            busy = dev.address in self._busy
            error = self._errors.get(dev.address, "")
            used_by = self._used_by.get(dev.address, "") if not dev.on_vfio else ""
            if dev.on_vfio and dev.iommu_group is not None:
                holders = self._group_holders.get(dev.iommu_group, [])
            else:
                holders = self._host_holders.get(dev.address, [])
        if not dev.healthy and not error:
            error = "config space reads all ones: the device is dead until a bus reset"
        if busy:
            state = State.BUSY
        elif error:
            state = State.ERROR
        elif dev.driver is None:
            state = State.UNBOUND
        elif dev.on_vfio:
            state = State.GUEST if holders else State.VFIO
        else:
            state = State.HOST
        return DeviceStatus(
            address=dev.address, vendor_id=dev.vendor, device_id=dev.device, name=dev.name,
            class_code=dev.class_code, driver=dev.driver or "",
            host_driver=self.store.host_driver(dev.address)
            or (dev.driver if dev.driver and not dev.on_vfio else "") or "",
            state=state,
            iommu_group=dev.iommu_group if dev.iommu_group is not None else -1,
            holder=", ".join(str(p) for p in holders),
            holder_pid=holders[0].pid if holders else 0,
            reset_methods=list(dev.reset_methods), healthy=dev.healthy,
            boot_vga=dev.boot_vga, is_bridge=dev.is_bridge, error=error,
            used_by=used_by)
