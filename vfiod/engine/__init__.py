"""The binding engine: what the host has, what changes it, and reset, behind one facade.

Plain synchronous code over the Host boundary, in three parts:

- ``inventory``: every PCI function as last read, its holders and usages, what is
  busy and what failed; reads only.
- ``transactions``: bind and unbind as journalled transactions over an IOMMU group,
  and recovery of what a killed process left (forward after the commit mark, back
  before it; never a transaction of an earlier boot).
- ``reset``: the kernel's reset methods and VFIO's hot reset.

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
from vfiod.config import boot_conflicts, check_boot_groups, resolve_name
from vfiod.engine.inventory import Inventory
from vfiod.engine.progress import Progress, reporting
from vfiod.engine.reset import Resetter
from vfiod.engine.transactions import Transactions, group_key, lock_order
from vfiod.engine.writes import Writer
from vfiod.errors import NoSuchDevice
from vfiod.host.base import DEFAULT_WRITE_TIMEOUT, Host
from vfiod.journal import Journal
from vfiod.model import PciDevice
from vfiod.records import DeviceStatus

if TYPE_CHECKING:
    from vfiod.config import Config

__all__ = ["Engine"]

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
        self.transactions = Transactions(self.inventory, self.journal, writer)
        self.resetter = Resetter(self.inventory, writer)

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

        Returns the addresses that moved (see Transactions.bind for the errors).
        """
        return self.transactions.bind(self.resolve(device), group=group, force=force)

    def unbind(self, device: str, *, group: bool = True) -> list[str]:
        """Return a device (and by default its group) from vfio-pci to its host driver."""
        return self.transactions.unbind(self.resolve(device), group=group)

    def reset(self, device: str, *, force: bool = False) -> str:
        """Reset a device with the kernel's methods, best first; return the one that worked."""
        return self.resetter.reset(self.resolve(device), force=force)

    def run(self, op: str, address: str, *, group: bool = True, force: bool = False,
            progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
            wait: float = 0.0) -> list[str] | str:
        """Run one operation on an address resolve() returned (no second resolution).

        *progress* is called at each step (vfiod.engine.progress: the phase, what it
        waits for, whether a kernel write is under way); *cancelled* is asked at each
        safe step, and True stops the operation there (Cancelled, after rolling back);
        *wait*: seconds to wait for a process to let go of the device before refusing
        with InUse (0: refuse at once).
        """
        if op not in ("bind", "unbind", "reset"):
            raise ValueError(f"unknown operation {op}")
        with reporting(progress, cancelled, wait):
            if op == "bind":
                return self.transactions.bind(address, group=group, force=force)
            if op == "unbind":
                return self.transactions.unbind(address, group=group)
            return self.resetter.reset(address, force=force)

    def affected(self, op: str, address: str, group: bool) -> list[str]:
        """The functions an operation may move: the endpoints of the group, or one."""
        if op == "reset" or not group:
            return [address]
        members = [self.inventory.device(a) for a in self.inventory.members(address)]
        return [d.address for d in members if d is not None and not d.is_bridge] or [address]

    def recover(self) -> list[str]:
        """Finish (roll forward or back) what a killed process left in this boot; return
        the addresses covered. What was set aside is in state_problems()."""
        return self.transactions.recover()

    def state_problems(self) -> list[str]:
        """What was wrong with the state directory's files: damaged ones moved aside,
        transactions of an earlier boot discarded (each a sentence for the log)."""
        return list(self.journal.problems)

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
        return self.inventory.device_status(address)

    def status(self, addresses: Iterable[str] | None = None) -> list[DeviceStatus]:
        """Every function (or these), sorted by address."""
        return self.inventory.status(addresses)
