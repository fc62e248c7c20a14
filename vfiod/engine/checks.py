"""CheckDevices: is a guest's whole device list ready to go to vfio-pci, and if not, why.

For each device (an address, short address or config name, as a domain's hostdevs
give them): it exists; its ids are the ones the config file says for its address (the
hardware changed or a card moved); every endpoint of its IOMMU group is in the list
or on vfio-pci already; it is healthy, not held by another guest, and not refused for
a reason of its own (its quarantine); and the list binds
as one plan per group, with no member the host needs (the guards, hard and soft: the
libvirt hook binds without force). Every problem is one row with its fix.

The IOMMU group number is not checked against a recorded one: neither the config
file nor the journal records groups, so a moved card shows as changed ids (or as a
missing group mate) instead.

Reads only: the bind plans are dry runs (vfiod.engine.plan).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from vfiod.address import is_address
from vfiod.errors import NoSuchDevice, Quarantined, VfiodError
from vfiod.model import PciDevice

if TYPE_CHECKING:
    from vfiod.engine import Engine

Severity = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class DeviceCheck:
    """One finding about one device: ``ok`` (ready), ``warning`` or ``error``."""

    device: str
    severity: Severity
    message: str

    def row(self) -> tuple[str, str, str]:
        """The D-Bus row (sss)."""
        return (self.device, self.severity, self.message)


def check_devices(engine: Engine, devices: Iterable[str]) -> list[DeviceCheck]:
    """Every problem with handing *devices* (one guest's list) to vfio-pci, with its
    fix; one ``ok`` row for each device without any."""
    checks: list[DeviceCheck] = []
    resolved: dict[str, str] = {}  # address -> the argument that named it
    for arg in devices:
        try:
            address = engine.resolve(arg)
        except NoSuchDevice as exc:
            checks.append(DeviceCheck(arg, "error", _missing(engine, arg, exc)))
            continue
        except VfiodError as exc:
            checks.append(DeviceCheck(arg, "error", f"{exc}; fix: name the device by its "
                                      "PCI address (0000:06:00.0) or a config name"))
            continue
        resolved.setdefault(address, arg)
    inventory = engine.inventory
    # Rows by IOMMU group (a device without one is its own): a device is ready only
    # when nothing is wrong with any member of its group.
    by_group: dict[int | str, list[DeviceCheck]] = {}
    for address in resolved:
        dev = inventory.device(address)
        assert dev is not None  # resolve() read it
        key = dev.iommu_group if dev.iommu_group is not None else address
        by_group.setdefault(key, []).extend(_own_checks(engine, dev))
    planned: set[int | str] = set()
    for address in resolved:
        dev = inventory.device(address)
        assert dev is not None
        key = dev.iommu_group if dev.iommu_group is not None else address
        if key not in planned:
            planned.add(key)
            by_group[key] += _group_checks(engine, dev, set(resolved))
    for rows in by_group.values():
        checks += rows
    for address in resolved:
        dev = inventory.device(address)
        assert dev is not None
        if not by_group[dev.iommu_group if dev.iommu_group is not None else address]:
            checks.append(DeviceCheck(address, "ok", _ready(engine, address)))
    return checks


def _missing(engine: Engine, arg: str, exc: NoSuchDevice) -> str:
    """Why a device is not there, with what is at its place when the config knows it."""
    config = engine.config
    entry = config.entry_named(arg) if config is not None and not is_address(arg) else None
    if entry is not None and entry.address is not None:
        there = engine.inventory.device(entry.address)
        if there is not None:
            return _changed_ids(entry.label, entry.match, there)
    return (f"{exc}: the hardware changed or the card moved; fix: find it with "
            "`vfioctl status` (or lspci -nn) and correct the domain's <hostdev> address "
            "and the config file")


def _changed_ids(label: str, match: str, dev: PciDevice) -> str:
    return (f"{dev.address}: the config file's {label!r} says {match!r}, but the device "
            f"there is {dev.ids} ({dev.name or 'unnamed'}): the hardware changed or a card "
            "moved; fix: check which card the guest should get (`vfioctl status`), then "
            "correct the domain's <hostdev> address or the config file's match")


def _own_checks(engine: Engine, dev: PciDevice) -> list[DeviceCheck]:
    """Ids against the config, health, another holder, vfiod's own refusal."""
    found: list[DeviceCheck] = []
    a = dev.address

    def error(message: str) -> None:
        found.append(DeviceCheck(a, "error", message))

    config = engine.config
    for entry in config.devices if config is not None else []:
        if entry.address == a and entry.ids is not None \
                and entry.ids != (dev.vendor, dev.device):
            error(_changed_ids(entry.label, entry.match, dev))
    if dev.is_bridge:
        error(f"{a}: is a PCI bridge, which stays on its driver and cannot be passed "
              "through; fix: remove it from the domain and name the devices behind it")
    status = engine.device_status(a)
    if not status.healthy:
        what = "its config space reads all ones: the device is dead" if not dev.healthy \
            else status.error
        error(f"{a}: {what}; fix: "
              f"`vfioctl reset {a}` (a bus reset), or power the machine off and on")
    elif status.error:
        found.append(DeviceCheck(a, "warning", f"{a}: its last operation failed: "
                                 f"{status.error}; fix: check `vfioctl status {a}`, and "
                                 f"`vfioctl reset {a}` if it stays in error"))
    if dev.on_vfio and status.holder:
        error(f"{a}: is held by {status.holder}, another guest or program; fix: shut that "
              "guest down first, or give this domain another device")
    reason = status.quarantine_reason  # the plan's refusal of it is not shown again
    if reason:
        error(reason if reason.startswith(a) else f"{a}: {reason}")
    return found


def _group_checks(engine: Engine, dev: PciDevice, chosen: set[str]) -> list[DeviceCheck]:
    """The group of *dev*: every endpoint in the list or on vfio-pci, and the dry run of
    its bind (what the host would lose, and any other refusal)."""
    found: list[DeviceCheck] = []
    a = dev.address
    members = [m for x in engine.members(a)
               if (m := engine.inventory.device(x)) is not None]
    missing = [m for m in members if m.is_endpoint and m.address not in chosen
               and not m.on_vfio]
    if dev.iommu_group is not None and missing:
        names = ", ".join(f"{m.address} ({m.name or m.ids}, {m.driver or 'no driver'})"
                          for m in missing)
        adds = " and ".join(m.address for m in missing)
        found.append(DeviceCheck(
            a, "error", f"{a}: IOMMU group {dev.iommu_group} also holds {names}, which the "
            f"domain does not name: binding {a} would take it from the host too; fix: add "
            f"a <hostdev> for {adds} to the domain, or remove {a}"))
    try:
        plan = engine.plan("bind", a)
    except VfiodError as exc:  # busy in the kernel: no plan to show
        return found + [DeviceCheck(a, "error", f"{exc}; fix: wait until it is over, "
                                    "then check again")]
    for guard in plan.guards:
        if guard.kind == "hard":
            found.append(DeviceCheck(guard.address, "error", (
                f"{guard.address}: the host needs it: {guard.reason}; fix: give the guest "
                "another device (force does not override this)")))
        else:
            found.append(DeviceCheck(guard.address, "error", (
                f"{guard.address}: the host uses it: {guard.reason}; fix: stop using it on "
                f"the host first (or take it anyway with `vfioctl bind --force "
                f"{guard.address}` before starting the guest)")))
    if isinstance(plan.refusal, Quarantined) and all(
            m in chosen or engine.quarantine_reason(m) is None
            for m in engine.affected("bind", a, True)):
        return found  # each quarantined device has its own row (_own_checks)
    if plan.refusal is not None and not plan.guards and not dev.is_bridge:
        found.append(DeviceCheck(a, "error", f"{plan.refusal}"))
    return found


def _ready(engine: Engine, address: str) -> str:
    """The ok row's message: what the device is and where it would go."""
    dev = engine.inventory.device(address)
    assert dev is not None
    where = "on vfio-pci already" if dev.on_vfio else \
        f"on {dev.driver or 'no driver'}, would move to vfio-pci"
    group = f"IOMMU group {dev.iommu_group}" if dev.iommu_group is not None else "no group"
    return f"{address}: ready ({dev.name or dev.ids}, {group}, {where})"
