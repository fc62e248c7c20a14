"""The early-boot shim: rendered from the config and the live host, installed for the
initramfs tool the machine uses.

``render_shim(config, devices)`` turns every device with ``boot = "vfio"``, plus the other
endpoints of its IOMMU group (bridges excluded), into a POSIX sh script (template:
initramfs/vfiod-shim.sh.in). ``install_shim(config, host, root=...)`` writes it to
``/var/lib/vfiod/early-boot.sh`` under *root* together with the integration files of the
detected tool (initramfs-tools, dracut or mkinitcpio), which copy it into the initramfs
as ``/usr/lib/vfiod/early-boot.sh`` and run it before udev loads host drivers.

Rendering is deterministic (no timestamps), so that the doctor can tell a stale shim by
rendering it again and comparing.

``install_shim_offline(config, root=...)`` is for image builders (a chroot, mkosi,
Packer): it renders from the config alone, reading no device. Each boot = "vfio" entry
must then give ids and address (``match = "10de:1b06@0000:06:00.0"``); the shim checks
those ids at that address at boot, and finds each device's IOMMU group there: a group
holding an endpoint the config does not list is left to the host, so every member of a
group must be listed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vfiod.atomicfile import atomic_write
from vfiod.config import Config, DeviceEntry, boot_conflicts
from vfiod.contract import DEFAULT_CONFIG_PATH
from vfiod.errors import Failed
from vfiod.host.base import Host
from vfiod.model import PciDevice
from vfiod.printable import printable

#: Where install_shim writes the shim on the host (the integrations copy it from here).
SHIM_PATH = "/var/lib/vfiod/early-boot.sh"

#: Where the integrations put it inside the initramfs (the hooks spell it too).
SHIM_IN_INITRAMFS = "/usr/lib/vfiod/early-boot.sh"

#: The group argument of an offline-rendered device: the shim looks it up at boot.
GROUP_AT_BOOT = "-"

TEMPLATE_NAME = "vfiod-shim.sh.in"
_DEVICES_MARKER = "\t# @DEVICES@\n"

TOOLS = ("initramfs-tools", "dracut", "mkinitcpio")

#: Integration files per tool: (file under initramfs/, host path it is installed to).
INTEGRATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "initramfs-tools": (
        ("initramfs-tools/hooks/vfiod", "/usr/share/initramfs-tools/hooks/vfiod"),
        ("initramfs-tools/scripts/init-top/00-vfiod",
         "/usr/share/initramfs-tools/scripts/init-top/00-vfiod"),
    ),
    "dracut": (
        ("dracut/90vfiod/module-setup.sh", "/usr/lib/dracut/modules.d/90vfiod/module-setup.sh"),
        ("dracut/90vfiod/vfiod-pre-udev.sh",
         "/usr/lib/dracut/modules.d/90vfiod/vfiod-pre-udev.sh"),
    ),
    "mkinitcpio": (
        ("mkinitcpio/install/vfiod", "/usr/lib/initcpio/install/vfiod"),
        ("mkinitcpio/hooks/vfiod", "/usr/lib/initcpio/hooks/vfiod"),
    ),
}

#: What marks each tool as the one in use, most specific first.
TOOL_MARKERS: dict[str, tuple[str, ...]] = {
    "initramfs-tools": ("/usr/sbin/update-initramfs", "/sbin/update-initramfs",
                        "/usr/sbin/mkinitramfs"),
    "dracut": ("/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"),
    "mkinitcpio": ("/usr/bin/mkinitcpio", "/etc/mkinitcpio.conf"),
}

REBUILD = {
    "initramfs-tools": "update-initramfs -u -k all",
    "dracut": "dracut --regenerate-all --force",
    "mkinitcpio": "mkinitcpio -P",
}


class ShimError(Failed):
    """The shim cannot be generated as configured (the message says which entry, why)."""


@dataclass(frozen=True)
class ShimDevice:
    """One function the shim claims."""

    group: int | None
    address: str
    ids: str
    why: str
    #: Rendered offline: the shim reads the IOMMU group at boot.
    group_at_boot: bool = False

    @property
    def unit(self) -> str:
        """What the shim claims or leaves together: the IOMMU group, else the address.

        ``-`` asks the shim to find the group at boot (an offline render).
        """
        if self.group_at_boot:
            return GROUP_AT_BOOT
        return str(self.group) if self.group is not None else self.address


# -- planning and rendering --------------------------------------------------------------

def _device_map(devices: Mapping[str, PciDevice] | Iterable[PciDevice]) -> dict[str, PciDevice]:
    if isinstance(devices, Mapping):
        return dict(devices)
    return {d.address: d for d in devices}


def resolve_entry(config: Config, entry: DeviceEntry,
                  devices: Mapping[str, PciDevice]) -> list[PciDevice]:
    """The devices one entry stands for on this host; ShimError when none or ambiguous."""
    found = config.devices_for(entry, devices.values())
    if entry.address is not None:
        if not found:
            present = devices.get(entry.address)
            if present is None:
                raise ShimError(f"{entry.label}: no PCI device at {entry.address}")
            raise ShimError(f"{entry.label}: {entry.address} is {present.ids} "
                            f"({present.name}), not the {entry.match.partition('@')[0]} "
                            "the config expects (did the card move?)")
        return found
    if not found:
        raise ShimError(f"{entry.label}: no PCI device with ids {entry.match}")
    if len(found) > 1:
        where = ", ".join(d.address for d in found)
        raise ShimError(f"{entry.label}: {len(found)} devices have ids {entry.match} "
                        f"({where}); boot = \"vfio\" needs one: write match = "
                        f"\"{entry.match}@{found[0].address}\" (or the address) for the "
                        "one to claim")
    return found


def plan_shim(config: Config,
              devices: Mapping[str, PciDevice] | Iterable[PciDevice]) -> list[ShimDevice]:
    """Every function the shim claims, sorted by IOMMU group and address.

    Each boot = "vfio" entry brings the other endpoints of its IOMMU group along (a
    partly claimed group is not viable); bridges stay with the host. A group member
    whose entry says boot = "host" is a conflict: ShimError with the file and line.
    """
    by_address = _device_map(devices)
    conflicts = boot_conflicts(config, by_address.values())
    if conflicts:  # the group would take the boot = "host" member along
        raise ShimError(str(conflicts[0].error(config)))
    planned: dict[str, ShimDevice] = {}
    for entry in config.boot_entries():
        for dev in resolve_entry(config, entry, by_address):
            if dev.is_bridge:
                raise ShimError(f"{entry.label}: {dev.address} is a bridge; bridges are "
                                "never passed to a guest")
            planned.setdefault(dev.address, ShimDevice(dev.iommu_group, dev.address,
                                                       dev.ids, entry.label))
            if dev.iommu_group is None:
                continue
            for mate in by_address.values():
                if (mate.iommu_group == dev.iommu_group and mate.is_endpoint
                        and mate.address not in planned):
                    planned[mate.address] = ShimDevice(
                        mate.iommu_group, mate.address, mate.ids,
                        f"IOMMU group {dev.iommu_group} of {entry.label}")
    # Entries named explicitly keep their own label even when a group-mate came first.
    for entry in config.boot_entries():
        for dev in config.devices_for(entry, by_address.values()):
            if dev.address in planned:
                old = planned[dev.address]
                planned[dev.address] = ShimDevice(old.group, old.address, old.ids, entry.label)
    return sorted(planned.values(),
                  key=lambda s: (s.group if s.group is not None else -1, s.address))


def plan_shim_offline(config: Config) -> list[ShimDevice]:
    """The functions the shim claims, from the config alone (no device is read).

    ShimError for an entry without both ids and an address: the shim must know what
    to expect where without this machine's devices.
    """
    planned: dict[str, ShimDevice] = {}
    for entry in config.boot_entries():
        ids, _, address = entry.match.rpartition("@")
        if not ids or entry.address is None:
            raise ShimError(f"{entry.label}: offline, boot = \"vfio\" needs ids and address "
                            f"in match (\"VENDOR:DEVICE@{entry.address or 'ADDRESS'}\", as "
                            "lspci -nn shows them), not just "
                            f"{'an address' if entry.address else 'ids'}")
        planned.setdefault(address, ShimDevice(None, address, ids, entry.label,
                                               group_at_boot=True))
    return sorted(planned.values(), key=lambda s: s.address)


def template_dirs() -> list[Path]:
    """Where the initramfs/ templates are looked for, in order.

    $VFIOD_DATA_DIR/initramfs, the source tree (an editable install), then the data
    directory `make install` fills: <prefix>/share/vfiod/initramfs, where <prefix> is
    found from this file (PREFIX/lib/vfiod/vfiod/initramfs.py) or is a usual one.
    """
    dirs: list[Path] = []
    if env := os.environ.get("VFIOD_DATA_DIR"):
        dirs.append(Path(env) / "initramfs")
    here = Path(__file__).resolve()
    dirs.append(here.parents[1] / "initramfs")
    # `make install` puts the package in PREFIX/lib/vfiod/vfiod/, the data in PREFIX/share.
    prefixes = [str(here.parents[3])] if len(here.parents) > 3 else []
    for prefix in (*prefixes, sys.prefix, "/usr/local", "/usr"):
        dirs.append(Path(prefix) / "share" / "vfiod" / "initramfs")
    return dirs


def template_dir() -> Path:
    """The first directory holding the shim template; ShimError when none does."""
    for d in template_dirs():
        if (d / TEMPLATE_NAME).is_file():
            return d
    raise ShimError("the early-boot shim template is not installed (looked in "
                    + ", ".join(str(d) for d in template_dirs()) + ")")


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def render_shim(config: Config,
                devices: Mapping[str, PciDevice] | Iterable[PciDevice] | None,
                warnings: Iterable[str] = ()) -> str:
    """The shim as a POSIX sh script, for the boot = "vfio" entries of *config*.

    *devices* is the live host's device list (vfiod.discovery.scan); ShimError when an
    entry does not resolve to exactly the device(s) it names. None renders offline
    (plan_shim_offline). Each of *warnings* becomes a ``# WARNING:`` comment at the top,
    below the ``#!`` line.
    """
    planned = plan_shim(config, devices) if devices is not None else plan_shim_offline(config)
    return _render(config, planned, warnings)


def _render(config: Config, planned: list[ShimDevice], warnings: Iterable[str] = ()) -> str:
    template = (template_dir() / TEMPLATE_NAME).read_text(encoding="utf-8")
    if _DEVICES_MARKER not in template:
        raise ShimError(f"the shim template has no {_DEVICES_MARKER.strip()!r} line")
    calls = "".join(
        f'\t"$1" {_sh_quote(d.unit)} {d.address} {d.ids} {_sh_quote(d.why)}\n'
        for d in planned)
    listed = " ".join(d.address for d in planned)
    text = (template
            .replace(_DEVICES_MARKER, calls)
            .replace("@LISTED@", listed)
            .replace("@CONFIG@", config.path or DEFAULT_CONFIG_PATH))
    notes = "".join(f"# WARNING: {printable(w)}\n" for w in warnings)
    if not notes:
        return text
    first, newline, rest = text.partition("\n")
    if first.startswith("#!"):
        return first + newline + notes + rest
    return notes + text


# -- installing --------------------------------------------------------------------------

def _under(root: Path, host_path: str) -> Path:
    return root / host_path.lstrip("/")


def detect_tool(root: str | os.PathLike[str] = "/") -> str | None:
    """The initramfs tool installed under *root*, or None."""
    base = Path(root)
    for tool in TOOLS:
        if any(_under(base, marker).exists() for marker in TOOL_MARKERS[tool]):
            return tool
    return None


@dataclass
class InstallResult:
    """What install_shim did, and what the user runs next."""

    tool: str
    shim: Path | None  # None when no device has boot = "vfio" (an old shim was removed)
    claimed: list[ShimDevice] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


_HOST_NEEDS_IT = "the host needs it (is it in the IOMMU group of a device with boot = \"vfio\"?)"


def host_needs(host: Host, planned: list[ShimDevice],
               devices: Mapping[str, PciDevice]) -> list[tuple[str, str]]:
    """(address, why) of each planned device the running host cannot lose (its root
    disk's controller, a mounted filesystem's disk...): what install refuses."""
    from vfiod.guards import find_usages  # the guards read /proc; only needed here

    targets = [devices[d.address] for d in planned if d.address in devices]
    return [(u.address, printable(u.reason)) for u in find_usages(host, targets, probe=False) if u.hard]


def preview_warnings(host: Host, config: Config,
                     devices: Mapping[str, PciDevice]) -> list[str]:
    """What ``initramfs install`` would refuse in the shim ``render`` previews."""
    return [f"vfioctl initramfs install refuses this shim: it claims {address} at boot: "
            f"{why}; {_HOST_NEEDS_IT}"
            for address, why in host_needs(host, plan_shim(config, devices), devices)]


def _check_host_needs(host: Host, planned: list[ShimDevice],
                      devices: Mapping[str, PciDevice]) -> None:
    """Refuse to claim at boot a device the running host cannot lose (its root disk...)."""
    needs = host_needs(host, planned, devices)
    if needs:
        address, why = needs[0]
        raise ShimError(f"refusing to claim {address} at boot: {why}; {_HOST_NEEDS_IT}")


def install_shim(config: Config, host: Host, *, root: str | os.PathLike[str] = "/",
                 tool: str | None = None, devices: Mapping[str, PciDevice] | None = None,
                 check_host: bool = True) -> InstallResult:
    """Render the shim from *config* and the live *host*, and install it under *root*.

    Writes ``root/var/lib/vfiod/early-boot.sh`` and the integration files of *tool*
    (detected under *root* when None). With no boot = "vfio" entry, an existing shim
    is removed instead, so that the next initramfs claims nothing. Refuses (ShimError)
    devices the running host needs, unless *check_host* is False.
    """
    base = Path(root)
    tool = _tool_under(base, tool)
    if devices is None:
        from vfiod.discovery import scan

        devices = scan(host)
    result = InstallResult(tool=tool, shim=None)
    planned = plan_shim(config, devices)
    if not planned:
        _remove_shim(base, tool, result)
        return result

    if check_host:
        _check_host_needs(host, planned, devices)
    _write_shim(base, tool, _render(config, planned), planned, result)
    return result


def install_shim_offline(config: Config, *, root: str | os.PathLike[str],
                         tool: str | None = None) -> InstallResult:
    """Render the shim from *config* alone and install it into the tree at *root*.

    For image builders: no device of this machine is read and nothing of it is
    checked (the shim checks ids at each address at boot). *tool* is detected under
    *root* when None. With no boot = "vfio" entry an existing shim is removed.
    """
    base = Path(root)
    if not base.is_dir():
        raise ShimError(f"{base} is not a directory (the root of the image to install into)")
    tool = _tool_under(base, tool)
    result = InstallResult(tool=tool, shim=None)
    planned = plan_shim_offline(config)
    if not planned:
        _remove_shim(base, tool, result)
        return result
    _write_shim(base, tool, _render(config, planned), planned, result)
    return result


def _tool_under(base: Path, tool: str | None) -> str:
    tool = tool or detect_tool(base)
    if tool is None:
        raise ShimError(f"no initramfs tool found under {base} (initramfs-tools, dracut or "
                        "mkinitcpio); name one explicitly")
    if tool not in INTEGRATIONS:
        raise ShimError(f"unknown initramfs tool {tool!r} (known: {', '.join(TOOLS)})")
    return tool


def _remove_shim(base: Path, tool: str, result: InstallResult) -> None:
    shim_path = _under(base, SHIM_PATH)
    if shim_path.exists():
        shim_path.unlink()
        result.removed.append(shim_path)
    result.next_steps.append(f"{REBUILD[tool]}   # the next initramfs claims nothing")


def _write_shim(base: Path, tool: str, text: str, planned: list[ShimDevice],
                result: InstallResult) -> None:
    """Write the shim and the tool's integration files under *base*."""
    shim_path = _under(base, SHIM_PATH)
    atomic_write(shim_path, text, 0o755)
    result.shim = shim_path
    result.claimed = planned
    result.written.append(shim_path)

    source = template_dir()
    for name, host_path in INTEGRATIONS[tool]:
        src = source / name
        dest = _under(base, host_path)
        content = src.read_text(encoding="utf-8")
        if dest.is_file() and dest.read_text(encoding="utf-8") == content:
            continue  # already installed by the package
        atomic_write(dest, content, 0o755)
        result.written.append(dest)

    if tool == "mkinitcpio" and not _mkinitcpio_has_hook(base):
        result.next_steps.append('add "vfiod" to HOOKS in /etc/mkinitcpio.conf '
                                 '(before "udev" or "systemd")')
    result.next_steps.append(REBUILD[tool])


def _mkinitcpio_has_hook(root: Path) -> bool:
    """True when a HOOKS line of mkinitcpio's config names vfiod."""
    files = [_under(root, "/etc/mkinitcpio.conf")]
    conf_d = _under(root, "/etc/mkinitcpio.conf.d")
    if conf_d.is_dir():
        files += sorted(conf_d.glob("*.conf"))
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            stripped = line.split("#", 1)[0].strip()
            if not stripped.startswith("HOOKS"):
                continue
            for sep in "()=+\"'":
                stripped = stripped.replace(sep, " ")
            if "vfiod" in stripped.split():
                return True
    return False


def shim_is_current(config: Config, host: Host,
                    devices: Mapping[str, PciDevice]) -> bool | None:
    """True when the installed shim is what the config renders now; None when absent.

    Either render counts: from *devices*, or offline from the config alone.
    False also when the config no longer renders (an entry does not resolve).
    """
    installed = host.read_text(SHIM_PATH)
    if installed is None:
        return None
    # Rendered here from the live devices, or offline (an image builder) from the config.
    for source in (devices, None):
        try:
            wanted = render_shim(config, source)
        except ShimError:
            continue
        if installed == wanted.rstrip("\n"):
            return True
    return False
