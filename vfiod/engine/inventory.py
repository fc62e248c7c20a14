"""What the host has: every PCI function, who holds it, what the host uses it for.

The inventory reads (through discovery and the guards) and remembers; it never writes
to the host. Operations hand it the set of addresses they touched and, when they
scanned /proc for holders already, that scan (``Holders``), so nothing is read twice.
It also keeps what clients see besides the kernel's facts: which functions are busy
(an operation runs on them) and the last error of each.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

from vfiod.discovery import Scanner, iommu_enabled
from vfiod.errors import NoSuchDevice, Timeout
from vfiod.guards import find_usages, node_paths
from vfiod.host import paths
from vfiod.host.base import Host, Process
from vfiod.journal import Journal
from vfiod.model import PciDevice
from vfiod.records import DeviceStatus, State

#: Who holds which host path open (one /proc scan), by host path.
Holders = dict[str, list[Process]]


class Inventory:
    """The host's PCI functions as last read, with their holders and usages."""

    def __init__(self, host: Host, journal: Journal) -> None:
        self.host = host
        self.journal = journal
        self.scanner = Scanner(host)
        self._lock = threading.RLock()
        self._devices: dict[str, PciDevice] = {}
        self._scanned = False
        self._busy: set[str] = set()
        # Functions whose DRM cards the host's desktop is being asked to let go of.
        self._releasing: set[str] = set()
        self._errors: dict[str, str] = {}
        #: What the last reset's health check found wrong, by address (Healthy false).
        self._unhealthy: dict[str, str] = {}
        self._group_holders: dict[int, list[Process]] = {}
        self._host_holders: dict[str, list[Process]] = {}
        self._used_by: dict[str, str] = {}
        self._released: set[int] = set()
        # Holders the kernel vouched for (the fence's EBUSY) that /proc cannot tie to
        # a group: a 6.1 device fd is an anonymous inode. Kept while they live.
        self._vouched: dict[int, list[Process]] = {}
        # Functions with a write still in the kernel, or an operation finishing in the
        # background: address -> why (operations refused, shown busy).
        self._stalled: dict[str, str] = {}
        # Those of them that must not even be read (the write is still in the kernel).
        self._unreadable: set[str] = set()
        #: Called (on whatever thread) with the addresses an operation that finished in
        #: the background changed, so that a daemon can publish them.
        self.listener: Callable[[list[str]], None] | None = None

    # -- reading ----------------------------------------------------------------------
    @property
    def iommu_enabled(self) -> bool:
        """True when the kernel has IOMMU groups."""
        return iommu_enabled(self.host)

    def rescan(self) -> None:
        """Re-read every PCI function, every holder and every usage from the host."""
        with self._lock:
            stalled = {a: self._devices[a] for a in self._unreadable if a in self._devices}
        devices = self.scanner.read([a for a in self.scanner.addresses() if a not in stalled])
        devices.update(stalled)  # as last read: reading them now could hang
        with self._lock:
            self._devices = devices
            self._scanned = True
        self._observe_host_drivers(devices.values())
        on_host = [d for d in devices.values() if d.driver and not d.on_vfio]
        # One /proc scan for the guests' group nodes and every node the host uses.
        found = self._replace_holders(devices, extra=[
            p for d in on_host for nodes in node_paths(self.host, d).values() for p in nodes])
        self._update_usages(devices.values(), found, replace=True)

    def reread(self, addresses: Iterable[str], holders: Holders | None = None
               ) -> dict[str, PciDevice]:
        """Re-read these functions (forgetting gone ones); return the fresh ones.

        With *holders* (a scan that covered these functions' group nodes and host
        nodes), their holders and usages are brought up to date from it too.
        """
        with self._lock:
            # A function with a write still in the kernel is not read (a read of its
            # driver_override would wait for the write); it keeps its last snapshot.
            addresses = [a for a in addresses if a not in self._unreadable]
        fresh = self.scanner.read(addresses)
        with self._lock:
            self._scanned_once()
            for a in addresses:
                if a in fresh:
                    self._devices[a] = fresh[a]
                else:
                    self._devices.pop(a, None)
                    self._errors.pop(a, None)
                    self._host_holders.pop(a, None)
                    self._used_by.pop(a, None)
        self._observe_host_drivers(fresh.values())
        if holders is not None:
            self._update_holders(fresh.values(), holders)
            self._update_usages(fresh.values(), holders)
        return fresh

    def fresh(self, address: str) -> tuple[PciDevice, list[PciDevice]]:
        """Re-read a function and every member of its IOMMU group (one read of all).

        Raises Timeout while a write to the function or its group is still in the
        kernel: nothing may touch them until it returns.
        """
        reason = self.stalled_reason(address)
        if reason is not None:
            raise Timeout(f"{address}: busy until the kernel returns: {reason}")
        group = self.host.link_name(paths.device_file(address, "iommu_group"))
        members = self.scanner.group_members(int(group)) if group and group.isdigit() else []
        if address not in members:
            members.append(address)
        fresh = self.reread(members)
        dev = fresh.get(address)
        if dev is None:
            raise NoSuchDevice(f"{address}: no such PCI device")
        if dev.iommu_group is None:
            return dev, [dev]
        return dev, [fresh[a] for a in sorted(fresh)]

    def devices(self) -> dict[str, PciDevice]:
        """The current snapshot, by address (a copy)."""
        with self._lock:
            self._scanned_once()
            return dict(self._devices)

    def device(self, address: str) -> PciDevice | None:
        """One function as last read, or None."""
        with self._lock:
            self._scanned_once()
            return self._devices.get(address)

    def exists(self, address: str) -> bool:
        """True when the host has this function now (hot-added ones included)."""
        return self.host.exists(paths.device_dir(address))

    def members(self, address: str) -> list[str]:
        """Every function in the device's IOMMU group (itself when it has none)."""
        with self._lock:
            self._scanned_once()
            dev = self._devices.get(address)
            if dev is None or dev.iommu_group is None:
                return [address]
            return sorted(a for a, d in self._devices.items()
                          if d.iommu_group == dev.iommu_group)

    def _observe_host_drivers(self, devices: Iterable[PciDevice]) -> None:
        """A recorded device the host bound by itself (a reboot, a modprobe, a user):
        what it bound is its host driver from now on."""
        records = self.journal.host_drivers()
        seen = {d.address: driver for d in devices
                if (driver := d.driver) and d.address in records and not d.on_vfio
                and driver != records[d.address]}
        if seen:
            self.journal.remember_host_drivers(seen)

    def host_driver(self, dev: PciDevice) -> str:
        """What Unbind would bind: the recorded driver when it is loaded or loadable,
        else the kernel's choice by modalias when known, else "" (a device on a host
        driver: that driver)."""
        if dev.driver and not dev.on_vfio:
            return dev.driver
        recorded = self.journal.host_driver(dev.address)
        if recorded and self.host.driver_loadable(recorded):
            return recorded
        return self.host.kernel_choice(dev.modalias) or ""

    def _members_locked(self, group: int) -> list[str]:
        """The functions of a group as last read (the caller holds the lock)."""
        return sorted(a for a, d in self._devices.items() if d.iommu_group == group)

    def _scanned_once(self) -> None:
        if not self._scanned:
            self.rescan()

    # -- holders ----------------------------------------------------------------------
    def scan_holders(self, nodes: Iterable[str]) -> Holders:
        """Who holds these host nodes open (one /proc scan), except vfiod itself (a VFIO
        hot reset holds the group fds for a moment; that is no guest)."""
        me = os.getpid()
        found: Holders = {}
        for path, procs in self.host.holders(nodes).items():
            others = [p for p in procs if p.pid != me]
            if others:
                found[path] = others
        return found

    def nodes_of(self, devices: Iterable[PciDevice]) -> list[str]:
        """Every node through which these functions are held: their groups' VFIO nodes,
        their VFIO device nodes, and the host's nodes of them (DRM, sound)."""
        nodes: list[str] = []
        groups = set()
        for dev in devices:
            if dev.iommu_group is not None and dev.iommu_group not in groups:
                groups.add(dev.iommu_group)
                nodes.append(paths.group_node(dev.iommu_group))
            nodes += [paths.vfio_device_node(n)
                      for n in self.host.listdir(paths.device_file(dev.address, "vfio-dev"))]
            for lst in node_paths(self.host, dev).values():
                nodes += lst
        return nodes

    def cdev_nodes(self, address: str) -> list[str]:
        """A function's VFIO device cdev nodes (``/dev/vfio/devices/vfio0``; 6.6+)."""
        return [paths.vfio_device_node(n)
                for n in self.host.listdir(paths.device_file(address, "vfio-dev"))]

    def name_vfio_holders(self, group: int) -> str:
        """Who holds a group the kernel says is held (one /proc scan), for a message.

        Holders of the group node and of its members' cdevs are named for sure; a 6.1
        device fd (an anonymous inode) names no device, so processes holding one are
        named as candidates, and remembered as the group's holders for Status.
        """
        names = self.vfio_holder_names(group, vouch=True)
        return ", ".join(names) or "a process vfiod cannot see (the kernel says it is held)"

    def vfio_holder_names(self, group: int, *, vouch: bool = False) -> list[str]:
        """``qemu-system-x86 (pid 4242) through /dev/vfio/31`` for each process that
        holds the group's node or a member's cdev; else each holder of any VFIO device
        fd (remembered as the group's holders when the kernel vouched: *vouch*)."""
        members = self.scanner.group_members(group)
        exact = [paths.group_node(group)] + [n for a in members for n in self.cdev_nodes(a)]
        found = self.scan_holders([*exact, paths.VFIO_DEVICE_FD])
        named = [f"{p} through {node}" for node in exact for p in found.get(node, [])]
        if named:
            return named
        candidates = found.get(paths.VFIO_DEVICE_FD, [])
        if candidates and vouch:
            with self._lock:
                self._vouched[group] = list(candidates)
                self._group_holders[group] = list(candidates)
                self._released.discard(group)
        return [f"{p} through a VFIO device fd" for p in candidates]

    def _holders_of_group(self, group: int, cdevs: Iterable[str], found: Holders
                          ) -> list[Process]:
        """A group's holders from a scan: its node, its members' cdevs (a guest may use
        only the iommufd cdev), and living holders the kernel vouched for."""
        procs = {p.pid: p for node in [paths.group_node(group), *cdevs]
                 for p in found.get(node, [])}
        vouched = [p for p in self._vouched.get(group, []) if self.host.alive(p.pid)]
        if vouched:
            self._vouched[group] = vouched
        else:
            self._vouched.pop(group, None)
        for p in vouched:
            procs.setdefault(p.pid, p)
        return list(procs.values())

    def rescan_holders_of(self, addresses: Iterable[str]) -> None:
        """Re-check who holds these functions (one /proc scan), as last read."""
        with self._lock:
            devices = [self._devices[a] for a in addresses if a in self._devices]
        holders = self.scan_holders(self.nodes_of(devices))
        self._update_holders(devices, holders)
        self._update_usages(devices, holders)

    def rescan_holders(self) -> None:
        """Re-check who holds every group node and every host DRM node (one /proc scan)."""
        self._replace_holders(self.devices())

    def _replace_holders(self, devices: dict[str, PciDevice], extra: Iterable[str] = ()
                         ) -> Holders:
        """Scan holders of every group node, host DRM node and *extra*; keep the first two."""
        groups = {d.iommu_group for d in devices.values()
                  if d.on_vfio and d.iommu_group is not None}
        host_nodes = {d.address: node_paths(self.host, d)["drm"] for d in devices.values()
                      if d.children.drm or d.children.nvidia_minor is not None}
        cdevs: dict[int, list[str]] = {}
        for d in devices.values():
            if d.on_vfio and d.iommu_group is not None:
                cdevs.setdefault(d.iommu_group, []).extend(self.cdev_nodes(d.address))
        nodes = [paths.group_node(g) for g in groups]
        nodes += [n for lst in cdevs.values() for n in lst]
        nodes += [p for lst in host_nodes.values() for p in lst]
        found = self.scan_holders([*nodes, *extra])
        with self._lock:
            before = {g for g, procs in self._group_holders.items() if procs}
            self._group_holders = {}
            for g in groups:
                procs = self._holders_of_group(g, cdevs.get(g, []), found)
                if procs:
                    self._group_holders[g] = procs
            now = set(self._group_holders)
            self._released |= before - now
            self._released -= now
            self._host_holders = {
                a: list({p.pid: p for n in lst for p in found.get(n, [])}.values())
                for a, lst in host_nodes.items()}
        return found

    def _update_holders(self, devices: Iterable[PciDevice], found: Holders) -> None:
        """Bring the holders of these functions (and their groups) up to date from a scan."""
        with self._lock:
            for dev in devices:
                if dev.on_vfio and dev.iommu_group is not None:
                    g = dev.iommu_group
                    cdevs = [n for a in self._members_locked(g) for n in self.cdev_nodes(a)]
                    procs = self._holders_of_group(g, cdevs, found)
                    if procs:
                        self._released.discard(g)
                        self._group_holders[g] = procs
                    elif self._group_holders.pop(g, None):
                        self._released.add(g)
                drm = node_paths(self.host, dev)["drm"]
                if drm:
                    self._host_holders[dev.address] = list(
                        {p.pid: p for n in drm for p in found.get(n, [])}.values())
                else:
                    self._host_holders.pop(dev.address, None)

    def _update_usages(self, devices: Iterable[PciDevice], holders: Holders, *,
                       replace: bool = False) -> None:
        """What the host uses each of these functions for (the guards' findings)."""
        devices = list(devices)
        on_host = [d for d in devices if d.driver and not d.on_vfio]
        found: dict[str, list[str]] = {}
        if on_host:
            # Status describes; only a guard before a detach claims disks to ask the kernel.
            for usage in find_usages(self.host, on_host, holders, probe=False):
                found.setdefault(usage.address, []).append(usage.reason)
        with self._lock:
            if replace:
                self._used_by = {}
            for dev in devices:
                self._used_by.pop(dev.address, None)
            self._used_by.update({a: "; ".join(reasons) for a, reasons in found.items()})

    def take_released(self) -> set[int]:
        """The groups guests let go of since the last call (each reported once)."""
        with self._lock:
            released, self._released = self._released, set()
        return released

    def vfio_holders(self) -> dict[str, tuple[PciDevice, list[Process]]]:
        """Every function on vfio-pci that a process holds now (its group's holders), as
        last read: {address: (function, holders)}."""
        with self._lock:
            return {a: (d, list(self._group_holders[d.iommu_group]))
                    for a, d in self._devices.items()
                    if d.on_vfio and d.iommu_group is not None
                    and self._group_holders.get(d.iommu_group)}

    def holder_pids(self) -> list[int]:
        """Every process that holds a group node now."""
        with self._lock:
            return sorted({p.pid for procs in self._group_holders.values() for p in procs})

    # -- what clients see besides the kernel's facts ---------------------------------------
    def mark_busy(self, addresses: Iterable[str]) -> None:
        """Show these devices as busy while an operation runs on them."""
        with self._lock:
            self._busy.update(addresses)

    def clear_busy(self, addresses: Iterable[str]) -> None:
        """The operation on these devices is over."""
        with self._lock:
            self._busy.difference_update(addresses)

    def mark_releasing(self, addresses: Iterable[str]) -> None:
        """The host's desktop is being asked to let go of these devices."""
        with self._lock:
            self._releasing.update(addresses)

    def clear_releasing(self, addresses: Iterable[str]) -> None:
        """The desktop let go of these devices, or did not in time."""
        with self._lock:
            self._releasing.difference_update(addresses)

    def stall(self, addresses: Iterable[str], reason: str, *, readable: bool = False) -> None:
        """A write to these functions is still in the kernel: show them busy with
        *reason*, refuse operations on them until unstall(), and read nothing of them
        (unless *readable*: the write returned and the operation is finishing)."""
        with self._lock:
            for a in addresses:
                self._stalled[a] = reason
                if readable:
                    self._unreadable.discard(a)
                else:
                    self._unreadable.add(a)

    def unstall(self, addresses: Iterable[str]) -> None:
        """The operation that stalled these functions is over."""
        with self._lock:
            for a in addresses:
                self._stalled.pop(a, None)
                self._unreadable.discard(a)

    def stalled_reason(self, address: str) -> str | None:
        """Why an operation must not touch this function or its group now, or None."""
        with self._lock:
            if address in self._stalled:
                return self._stalled[address]
            dev = self._devices.get(address)
            if dev is not None and dev.iommu_group is not None:
                for a in self._members_locked(dev.iommu_group):
                    if a in self._stalled:
                        return self._stalled[a]
            return None

    def notify(self, addresses: Iterable[str]) -> None:
        """Tell the listener that an operation finishing in the background changed these."""
        listener = self.listener
        if listener is not None:
            listener(sorted(set(addresses)))

    def record_error(self, addresses: Iterable[str], message: str) -> None:
        """The last operation on these devices failed: show it until one succeeds."""
        with self._lock:
            for a in addresses:
                self._errors[a] = message

    def clear_errors(self, addresses: Iterable[str]) -> None:
        """An operation on these devices succeeded."""
        with self._lock:
            for a in addresses:
                self._errors.pop(a, None)

    def mark_unhealthy(self, address: str, problem: str) -> None:
        """The health check after the last reset failed: Healthy is false until a reset
        leaves the function healthy again."""
        with self._lock:
            self._unhealthy[address] = problem

    def mark_healthy(self, addresses: Iterable[str]) -> None:
        """A reset left these functions healthy."""
        with self._lock:
            for a in addresses:
                self._unhealthy.pop(a, None)

    # -- status -----------------------------------------------------------------------
    def device_status(self, address: str) -> DeviceStatus:
        """Everything vfiod tells about one function."""
        dev = self.device(address)
        if dev is None:
            raise NoSuchDevice(f"{address}: no such PCI device")
        return self._status(dev)

    def status(self, addresses: Iterable[str] | None = None) -> list[DeviceStatus]:
        """Every function (or these, when they exist), sorted by address."""
        with self._lock:
            self._scanned_once()
            devices = self._devices
            if addresses is None:
                chosen = sorted(devices.items())
            else:
                chosen = sorted((a, devices[a]) for a in set(addresses) if a in devices)
        return [self._status(d) for _, d in chosen]

    def _status(self, dev: PciDevice) -> DeviceStatus:
        with self._lock:
            stalled = self._stalled.get(dev.address)
            busy = dev.address in self._busy or stalled is not None
            releasing = dev.address in self._releasing
            error = stalled or self._errors.get(dev.address, "")
            unhealthy = self._unhealthy.get(dev.address, "")
            used_by = self._used_by.get(dev.address, "") if not dev.on_vfio else ""
            if dev.on_vfio and dev.iommu_group is not None:
                holders = self._group_holders.get(dev.iommu_group, [])
            else:
                holders = self._host_holders.get(dev.address, [])
        if not dev.healthy and not error:
            error = "config space reads all ones: the device is dead until a bus reset"
        if unhealthy and not error:
            error = f"unhealthy after its last reset: {unhealthy}"
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
            host_driver=self.host_driver(dev),
            state=state,
            iommu_group=dev.iommu_group if dev.iommu_group is not None else -1,
            holder=", ".join(str(p) for p in holders),
            holder_pid=holders[0].pid if holders else 0,
            reset_methods=list(dev.reset_methods), healthy=dev.healthy and not unhealthy,
            boot_vga=dev.boot_vga, is_bridge=dev.is_bridge, error=error,
            used_by=used_by, releasing=releasing)
