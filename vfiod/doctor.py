"""`vfioctl doctor`: check the host's IOMMU/VFIO setup and say how to fix each problem.

``run_checks(host, config)`` reads the machine only through the Host interface (a
RealHost rooted at "/" read-only, or a SimHost) and returns one Check per finding, each
with a status (ok, warn, fail), a one-line summary and, when not ok, a fix of one or two
lines. Nothing here writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from vfiod.config import Config, DeviceEntry, boot_conflicts
from vfiod.contract import DEFAULT_CONFIG_PATH
from vfiod.discovery import scan
from vfiod.host import paths
from vfiod.host.base import Host
from vfiod.host.initramfs_image import ImageError, read_members
from vfiod.initramfs import (INTEGRATIONS, REBUILD, SHIM_IN_INITRAMFS, SHIM_PATH,
                             TOOL_MARKERS, TOOLS, shim_is_current)
from vfiod.model import VFIO_DRIVER, PciDevice
from vfiod.vendor_reset_ids import AMD_ATI
from vfiod.vendor_reset_ids import MODULE as VENDOR_RESET_MODULE
from vfiod.vendor_reset_ids import family as vendor_reset_family

Status = Literal["ok", "warn", "fail"]

# Newer Navi (21/22/31) that users report vendor-reset does not cover.
_NAVI_UNCOVERED = (range(0x73A0, 0x73E0), range(0x7440, 0x7480))

# Any of these means an initramfs tool will pick the shim up.
INTEGRATION_FILES = tuple(dest for files in INTEGRATIONS.values() for _, dest in files)


class Check(BaseModel):
    """One finding of the doctor."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: Status
    summary: str
    fix: str = ""


def _ok(id_: str, summary: str) -> Check:
    return Check(id=id_, status="ok", summary=summary)


def _warn(id_: str, summary: str, fix: str) -> Check:
    return Check(id=id_, status="warn", summary=summary, fix=fix)


def _fail(id_: str, summary: str, fix: str) -> Check:
    return Check(id=id_, status="fail", summary=summary, fix=fix)


class _Facts:
    """What the checks share, read once."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.devices = scan(host)
        self.groups = [g for g in host.listdir(paths.IOMMU_GROUPS) if g.isdigit()]
        self.iommu_units = host.listdir(paths.IOMMU_UNITS)
        self.cmdline = (host.read_text(paths.CMDLINE) or "").split()
        cpuinfo = host.read_text(paths.CPUINFO) or ""
        m = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo, re.M)
        self.cpu_vendor = m.group(1) if m else ""

    @property
    def iommu_on(self) -> bool:
        return bool(self.groups)

    def cmdline_value(self, key: str) -> str | None:
        """The value of the last key=value on the command line (the kernel's rule)."""
        value = None
        for word in self.cmdline:
            if word == key:
                value = ""
            elif word.startswith(key + "="):
                value = word[len(key) + 1:]
        return value

    @property
    def amd(self) -> bool:
        return self.cpu_vendor == "AuthenticAMD"

    def iommu_fix(self) -> str:
        """How to turn this machine's IOMMU on."""
        if self.amd:
            # AMD's IOMMU is on by default once the firmware enables it.
            return ("enable IOMMU/AMD-Vi in the firmware setup; the kernel then turns it on "
                    "by itself (unless amd_iommu=off is on its command line)")
        param = ("intel_iommu=on" if self.cpu_vendor == "GenuineIntel"
                 else "intel_iommu=on (Intel)")
        return ("enable VT-d in the firmware setup, then " + _grub_fix(param))

    def group_members(self, group: int) -> list[PciDevice]:
        return sorted((d for d in self.devices.values() if d.iommu_group == group),
                      key=lambda d: d.address)


def _short(dev: PciDevice) -> str:
    return f"{dev.address} {dev.name}".strip()


def _grub_fix(param: str) -> str:
    return (f"add {param} to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub "
            "(or your boot loader's entry), run update-grub, and reboot")


# -- host-wide checks ------------------------------------------------------------------

def check_iommu(facts: _Facts) -> Check:
    """IOMMU groups exist (the IOMMU is on) and an IOMMU unit is registered."""
    if facts.iommu_on:
        units = f" ({', '.join(facts.iommu_units)})" if facts.iommu_units else ""
        return _ok("iommu", f"the IOMMU is on: {len(facts.groups)} IOMMU groups{units}")
    fix = facts.iommu_fix()
    if facts.iommu_units:
        return _fail("iommu", f"an IOMMU is registered ({', '.join(facts.iommu_units)}) but "
                     "the kernel made no IOMMU groups", fix)
    return _fail("iommu", "the IOMMU is off: no IOMMU groups in /sys/kernel/iommu_groups, "
                 "so no device can be passed to a guest", fix)


def check_cmdline(facts: _Facts) -> Check:
    """The kernel command line turns the IOMMU on, and what to add for host performance."""
    intel = facts.cmdline_value("intel_iommu")
    amd = facts.cmdline_value("amd_iommu")
    pt = facts.cmdline_value("iommu") == "pt"
    for key, value in (("intel_iommu", intel), ("amd_iommu", amd)):
        if value is not None and "off" in value.split(","):
            return _fail("cmdline", f"the kernel command line has {key}={value}, which turns "
                         "the IOMMU off", f"remove {key}={value} from the kernel command line "
                         "(/etc/default/grub), run update-grub, and reboot")
    if not facts.iommu_on:
        if facts.amd:
            return _fail("cmdline", "the IOMMU is off although nothing on the kernel command "
                         "line turns it off", facts.iommu_fix())
        return _fail("cmdline", "the kernel command line does not turn the IOMMU on",
                     _grub_fix("intel_iommu=on"))
    given = [f"{k}={v}" for k, v in (("intel_iommu", intel), ("amd_iommu", amd)) if v]
    said = ", ".join(given) if given else "the kernel's default"
    advice = "" if pt else "; iommu=pt may spare host devices the IOMMU's translation cost"
    return _ok("cmdline", f"the IOMMU is on by {said}{advice}")


#: ECAP bit 3 of an Intel IOMMU unit: the hardware can remap interrupts (VT-d spec).
ECAP_IR = 1 << 3


def check_interrupt_remapping(facts: _Facts) -> Check | None:
    """Interrupts are remapped, or VFIO refuses every device (VFIO_SET_IOMMU: EPERM).

    The kernel's own answer is /proc/interrupts: with remapping enabled its irqchips
    read ``IR-IO-APIC`` and ``IR-PCI-MSI`` (Intel and AMD alike). vfio_iommu_type1
    refuses a container without it ("No interrupt remapping support") unless its
    allow_unsafe_interrupts parameter is set. Nothing to say while the IOMMU is off.
    Seen on Debian's 6.1 under QEMU's intel-iommu: intremap=on gives IR-IO-APIC and
    IR-PCI-MSI lines; booted with intremap=off, none (plain IO-APIC, PCI-MSI).
    """
    if not facts.iommu_on:
        return None
    host = facts.host
    interrupts = host.read_text(paths.INTERRUPTS)
    if interrupts is None:
        return _warn("intremap", f"cannot read {paths.INTERRUPTS} to see whether "
                     "interrupts are remapped", "run `vfioctl doctor` again as root")
    chips = {word for line in interrupts.splitlines() for word in line.split()}
    remapped = sorted(c for c in chips if c.startswith("IR-"))
    if remapped:
        return _ok("intremap", f"interrupt remapping is on ({', '.join(remapped[:2])})")
    unsafe = host.read_text(paths.module_parameter("vfio_iommu_type1",
                                                   "allow_unsafe_interrupts"))
    if unsafe in ("Y", "1"):
        return _warn("intremap", "interrupt remapping is off; VFIO runs only because "
                     "vfio_iommu_type1 allow_unsafe_interrupts is set",
                     "a guest can then inject interrupts into the host: turn remapping on "
                     "and drop allow_unsafe_interrupts")
    summary = ("interrupt remapping is off, so VFIO refuses every device (QEMU: "
               "\"No interrupt remapping support\")")
    for key in ("intremap", "nointremap"):
        value = facts.cmdline_value(key)
        if value is not None and (key == "nointremap" or value in ("off", "no_x2apic_optout")):
            given = key if key == "nointremap" else f"{key}={value}"
            return _fail("intremap", summary, f"remove {given} from the kernel command line "
                         "(/etc/default/grub), run update-grub, and reboot")
    without_ir = []
    for unit in facts.iommu_units:
        ecap = host.read_int(paths.iommu_unit_file(unit, "ecap"), 16)
        if ecap is not None and not ecap & ECAP_IR:
            without_ir.append(unit)
    if without_ir:
        return _fail("intremap", summary + f"; {', '.join(without_ir)} cannot remap",
                     "enable interrupt remapping (or x2APIC) in the firmware setup; only if "
                     "that is impossible: options vfio_iommu_type1 allow_unsafe_interrupts=1")
    return _fail("intremap", summary, "enable interrupt remapping (or x2APIC) in the "
                 "firmware setup, and check `dmesg | grep -i remapping` for why it is off")


def _modprobe_d_ids(host: Host) -> list[tuple[str, str]]:
    """(file, ids) of `options vfio-pci ids=...` lines in modprobe.d."""
    found = []
    for d in paths.MODPROBE_D:
        for name in host.listdir(d):
            if not name.endswith(".conf"):
                continue
            for line in (host.read_text(f"{d}/{name}") or "").splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) >= 3 and words[0] == "options" and \
                        words[1].replace("-", "_") == "vfio_pci":
                    for opt in words[2:]:
                        if opt.startswith("ids="):
                            found.append((f"{d}/{name}", opt[4:]))
    return found


def check_vfio_ids(facts: _Facts, config: Config | None) -> Check:
    """vfio-pci.ids= (command line or modprobe.d) claims every device of a model."""
    sources = [("the kernel command line", v) for v in
               [facts.cmdline_value("vfio-pci.ids"), facts.cmdline_value("vfio_pci.ids")] if v]
    sources += _modprobe_d_ids(facts.host)
    if not sources:
        return _ok("vfio_ids", "no vfio-pci ids= option claims devices by model")
    for where, ids_text in sources:
        for ids in ids_text.split(","):
            ids = ids.strip().lower()
            parts = ids.split(":")
            if len(parts) < 2:
                continue
            try:
                vendor, device = int(parts[0], 16), int(parts[1], 16)
            except ValueError:
                continue
            same = [d for d in facts.devices.values() if (d.vendor, d.device) == (vendor, device)]
            kept = [d for d in same if not _boots_on_vfio(config, d)]
            if len(same) > 1 and kept:
                return _warn("vfio_ids",
                             f"vfio-pci ids={ids} in {where} claims all {len(same)} devices "
                             f"{ids}, including {kept[0].address}, which the host keeps",
                             f"remove ids={ids_text} from {where}; give the one device to "
                             f"vfio-pci by address with boot = \"vfio\" in {DEFAULT_CONFIG_PATH}")
    return _ok("vfio_ids", "vfio-pci ids= options name no model the host also uses")


def check_vfio_module(facts: _Facts) -> Check:
    """vfio-pci is loaded, or a module for it exists."""
    host = facts.host
    if host.module_loaded("vfio_pci") or host.exists(paths.driver_dir(VFIO_DRIVER)):
        return _ok("vfio_module", "vfio-pci is loaded")
    release = host.read_text(paths.OSRELEASE)
    if release is None and host.simulated:
        # The simulated kernel has no /lib/modules; it loads vfio-pci on demand.
        return _ok("vfio_module", "vfio-pci is not loaded yet; it loads on the first bind")
    moddir = paths.modules_dir(release) if release else None
    if moddir and host.exists(moddir):
        listed = (host.read_text(f"{moddir}/modules.dep") or "") + "\n" + \
                 (host.read_text(f"{moddir}/modules.builtin") or "")
        if re.search(r"(^|/)vfio[-_]pci\.ko", listed, re.M):
            return _ok("vfio_module", "vfio-pci is not loaded yet; it loads on the first bind")
        return _fail("vfio_module", f"the kernel {release} has no vfio-pci module",
                     "install a kernel built with CONFIG_VFIO_PCI (every distribution "
                     "kernel has it) and its modules package")
    return _warn("vfio_module", "vfio-pci is not loaded, and the kernel's module list "
                 "could not be read", "run `modprobe vfio-pci` once to see whether it loads")


# -- per-device checks -------------------------------------------------------------------

def _entry(config: Config, dev: PciDevice) -> DeviceEntry | None:
    return config.entry_for(dev)


def _boots_on_vfio(config: Config | None, dev: PciDevice) -> bool:
    entry = config.entry_for(dev) if config is not None else None
    return entry is not None and entry.boot == "vfio"


def check_entry(facts: _Facts, config: Config, entry: DeviceEntry,
                index: int) -> tuple[Check, list[PciDevice]]:
    """A config entry names a device that is present with the ids it expects."""
    cid = f"device:{entry.label}"
    found = config.devices_for(entry, facts.devices.values())
    if entry.address is not None:
        if not found:
            present = facts.devices.get(entry.address)
            if present is None:
                return _fail(cid, f"device[{index}] ({entry.label}): no PCI device at "
                             f"{entry.address}",
                             "check `lspci -nn` for where the card is now and update its "
                             f"match in {DEFAULT_CONFIG_PATH}"), []
            want = entry.match.partition("@")[0]
            return _fail(cid, f"device[{index}] ({entry.label}): {entry.address} is "
                         f"{present.ids} {present.name}, not the {want} the config expects",
                         "the card moved or was replaced: update match in "
                         f"{DEFAULT_CONFIG_PATH} (and run vfioctl initramfs install)"), []
    elif not found:
        return _fail(cid, f"device[{index}] ({entry.label}): no PCI device has ids "
                     f"{entry.match}", "check `lspci -nn` and update match in "
                     f"{DEFAULT_CONFIG_PATH}"), []
    elif len(found) > 1:
        where = ", ".join(d.address for d in found)
        fix = (f"write match = \"{entry.match}@ADDRESS\" with the address of the one to "
               "pass; the others stay with the host")
        summary = (f"device[{index}] ({entry.label}): {len(found)} devices have ids "
                   f"{entry.match} ({where})")
        if entry.boot == "vfio":
            return _fail(cid, summary + "; boot = \"vfio\" would claim them all", fix), found
        return _warn(cid, summary + "; the name is ambiguous", fix), found
    dev = found[0]
    group = f", IOMMU group {dev.iommu_group}" if dev.iommu_group is not None else ""
    return _ok(cid, f"{entry.label}: {_short(dev)} on {dev.driver or 'no driver'}{group}"), \
        found


def check_group(facts: _Facts, config: Config, entry: DeviceEntry,
                devices: list[PciDevice]) -> Check | None:
    """The device's IOMMU group holds nothing the host cannot give away."""
    from vfiod.guards import find_usages  # reads /proc/mounts and friends

    cid = f"group:{entry.label}"
    for dev in devices:
        if dev.iommu_group is None:
            return None  # the iommu check reports it
        mates = [m for m in facts.group_members(dev.iommu_group)
                 if m.is_endpoint and m.address != dev.address]
        usages = find_usages(facts.host, [dev, *mates], probe=False)
        hard = [u for u in usages if u.hard]
        if hard:
            u = hard[0]
            if u.address == dev.address:
                return _fail(cid, f"{entry.label} ({dev.address}) is needed by the host: "
                             f"{u.reason}", "pass another device: vfiod never takes this "
                             "one from the host")
            return _fail(cid, f"IOMMU group {dev.iommu_group} of {entry.label} also holds "
                         f"{u.address}, which the host needs: {u.reason}",
                         "a group goes to a guest as a whole: move the card to a slot whose "
                         "IOMMU group holds only it")
        soft = [u for u in usages if not u.hard]
        if soft:
            u = soft[0]
            who = (f"{entry.label} ({dev.address}) is in use by the host"
                   if u.address == dev.address else
                   f"IOMMU group {dev.iommu_group} of {entry.label} also holds {u.address}, "
                   "which the host uses")
            return _warn(cid, f"{who}: {u.reason}",
                         "binding refuses it until the host lets go (or with force): stop "
                         "that user first, or move the card to another slot")
        unlisted = [m for m in mates if _entry(config, m) is None]
        if unlisted:
            names = ", ".join(_short(m) for m in unlisted)
            return _ok(cid, f"IOMMU group {dev.iommu_group} of {entry.label} also holds "
                       f"{names}; it goes to vfio-pci along with it")
        return _ok(cid, f"IOMMU group {dev.iommu_group} of {entry.label} can be passed "
                   "as a whole")
    return None


def check_boot_conflicts(facts: _Facts, config: Config) -> list[Check]:
    """No IOMMU group has one member with boot = "vfio" and another with boot = "host":
    the group goes to vfio-pci as a whole, so one of the two wishes would be overruled
    (vfiod refuses such a config at start and reload)."""
    conflicts = boot_conflicts(config, facts.devices.values())
    out = []
    for conflict in conflicts:
        where = config.path or DEFAULT_CONFIG_PATH
        vline, hline = (config.line_of(i, "boot") for i in (conflict.vfio[0],
                                                             conflict.host[0]))
        lines = " and ".join(f"line {n}" for n in (vline, hline) if n is not None)
        out.append(_fail(f"boot:group{conflict.group}", str(conflict.error(config)),
                         f"give {conflict.vfio[1].label} and {conflict.host[1].label} the "
                         f"same boot value in {where}" + (f" ({lines})" if lines else "")
                         + ", or drop boot from one to let it follow the group"))
    if not out and config.boot_entries():
        out.append(_ok("boot", "no IOMMU group mixes boot = \"vfio\" and boot = \"host\""))
    return out


def check_boot_vga(facts: _Facts, passing: Iterable[PciDevice]) -> Check:
    """The boot VGA among the devices to pass needs the framebuffer let go, and a ROM."""
    vga = [d for d in passing if d.boot_vga]
    if not vga:
        return _ok("boot_vga", "the boot VGA stays with the host")
    dev = vga[0]
    return _warn("boot_vga", f"{_short(dev)} is the boot VGA: the firmware framebuffer "
                 "(efifb/simpledrm) holds its memory, and its ROM is shadowed",
                 "boot with initcall_blacklist=sysfb_init (or video=efifb:off) so vfio-pci "
                 "can claim it, and give the guest a clean ROM file (<rom file=.../>)")


def check_driver_overrides(facts: _Facts) -> list[Check]:
    """A driver_override naming a driver the device is not on keeps it from its driver."""
    vfio_loaded = facts.host.module_loaded("vfio_pci")
    out = []
    for dev in sorted(facts.devices.values(), key=lambda d: d.address):
        ov = dev.driver_override
        if not ov or ov == dev.driver:
            continue
        cid = f"driver_override:{dev.address}"
        if dev.driver is None and ov == VFIO_DRIVER and not vfio_loaded:
            out.append(_warn(cid, f"{_short(dev)} waits for vfio-pci "
                             "(driver_override=vfio-pci, vfio-pci not loaded)",
                             "modprobe vfio-pci (or `vfioctl bind "
                             f"{dev.address}`)"))
            continue
        now = dev.driver or "no driver"
        out.append(_warn(cid, f"{_short(dev)} has driver_override={ov} but is on {now}: "
                         f"no other driver will take it",
                         f"`vfioctl unbind {dev.address}` returns it to its host driver "
                         f"(or: echo > /sys/bus/pci/devices/{dev.address}/driver_override)"))
    if not out:
        out.append(_ok("driver_override", "no stale driver_override"))
    return out


def check_vendor_reset(facts: _Facts, passing: Iterable[PciDevice]) -> list[Check]:
    """AMD GPUs that only survive a guest reboot with the vendor-reset module."""
    out = []
    for dev in passing:
        if dev.vendor != AMD_ATI or dev.base_class >> 8 != 0x03:
            continue
        cid = f"vendor_reset:{dev.address}"
        family = vendor_reset_family(dev.vendor, dev.device)
        if family is not None:
            if not facts.host.module_loaded(VENDOR_RESET_MODULE):
                out.append(_warn(cid, f"{_short(dev)} (AMD {family}) does not survive a "
                                 "reset after a guest used it without the vendor-reset "
                                 "module: the reset bug",
                                 "install vendor-reset (DKMS) and load it at boot "
                                 "(modules-load.d); vfiod's reset then tries its "
                                 "device_specific reset first (Linux 5.15+ needs "
                                 "device_specific in reset_method: vfiod selects it)"))
            else:
                out.append(_ok(cid, f"{_short(dev)} (AMD {family}) resets with "
                               "vendor-reset: vfiod tries device_specific first"))
        elif any(dev.device in r for r in _NAVI_UNCOVERED):
            out.append(_warn(cid, f"{_short(dev)}: users report this GPU family does not "
                             "always reset after a guest used it, and vendor-reset does "
                             "not cover it", "if a guest's second start fails, shut the "
                             "guest down cleanly (or suspend the host) before retrying"))
    return out


def _rebuild_command(host: Host) -> str:
    """How this machine rebuilds its initramfs (the tool it has)."""
    for tool in TOOLS:
        if any(host.exists(marker) for marker in TOOL_MARKERS[tool]):
            return REBUILD[tool]
    return "update-initramfs -u, dracut -f or mkinitcpio -P"


def _current_initramfs_shim(host: Host) -> tuple[str, bytes | None] | str:
    """(image, the shim inside it or None) for the running kernel; else why not known."""
    release = host.read_text(paths.OSRELEASE)
    if not release:
        return "cannot tell which kernel runs"
    images = [p for p in paths.initramfs_images(release) if host.exists(p)]
    if not images:
        return f"found no initramfs for the running kernel {release} in /boot"
    image = images[0]
    data = host.read_bytes(image)
    if data is None:
        return f"cannot read {image} (run `vfioctl doctor` as root)"
    try:
        members = read_members(data, [SHIM_IN_INITRAMFS])
    except ImageError as exc:
        return f"cannot read {image}: {exc}"
    return image, members.get(SHIM_IN_INITRAMFS.lstrip("/"))


def check_shim(facts: _Facts, config: Config | None) -> Check:
    """The early-boot shim is installed, current, and inside the running kernel's initramfs.

    The initramfs is what runs at boot: a shim installed but not yet rebuilt into it
    claims nothing, and one left inside it after removal still claims its devices.
    """
    host = facts.host
    boot = config.boot_entries() if config is not None else []
    exists = host.exists(SHIM_PATH)
    inside = _current_initramfs_shim(host)
    if not boot:
        if exists:
            return _warn("shim", f"{SHIM_PATH} exists but no device has boot = \"vfio\"",
                         "run `vfioctl initramfs install` to remove it, then rebuild the "
                         "initramfs")
        if isinstance(inside, tuple) and inside[1] is not None:
            return _warn("shim", f"no device has boot = \"vfio\", but {inside[0]} still "
                         "has the early-boot shim and claims its devices at every boot",
                         f"rebuild the initramfs: {_rebuild_command(host)}")
        return _ok("shim", "no device is claimed at boot (no boot = \"vfio\")")
    names = ", ".join(e.label for e in boot)
    if not facts.iommu_on:
        # A shim rendered now would have no IOMMU groups: it would claim devices
        # without their group-mates. Nothing about it can be advised before the IOMMU.
        return _warn("shim", f"{names}: boot = \"vfio\", but the early-boot shim cannot be "
                     "checked or installed while the IOMMU is off",
                     "turn the IOMMU on first (see the iommu check), then run `vfioctl "
                     "doctor` again")
    if not exists:
        them = "it" if len(boot) == 1 else "them"
        return _fail("shim", f"{names}: boot = \"vfio\" but the early-boot shim is missing, "
                     f"so host drivers take {them} at boot",
                     "run `vfioctl initramfs install`, then rebuild the initramfs")
    if not any(host.exists(p) for p in INTEGRATION_FILES):
        return _fail("shim", "the early-boot shim exists but no initramfs integration "
                     "copies it (initramfs-tools, dracut or mkinitcpio)",
                     "run `vfioctl initramfs install` (as root), then rebuild the initramfs")
    assert config is not None
    if shim_is_current(config, host, facts.devices) is False:
        return _warn("shim", f"{SHIM_PATH} does not match the config (a device or the "
                     "config changed since it was generated)",
                     "run `vfioctl initramfs install`, then rebuild the initramfs")
    rebuild = _rebuild_command(host)
    if isinstance(inside, str):
        return _warn("shim", f"the early-boot shim is installed, but {inside}, so whether "
                     "the next boot runs it is unknown", f"rebuild the initramfs: {rebuild}")
    image, copy = inside
    if copy is None:
        return _fail("shim", f"the early-boot shim is installed but {image} does not have "
                     f"it: host drivers take {names} at boot",
                     f"rebuild the initramfs: {rebuild}")
    if copy != host.read_bytes(SHIM_PATH):
        return _warn("shim", f"{image} has an older early-boot shim than {SHIM_PATH}",
                     f"rebuild the initramfs: {rebuild}")
    return _ok("shim", f"the early-boot shim claims {names} at boot (in {image})")


# -- all of them -------------------------------------------------------------------------

def run_checks(host: Host, config: Config | None) -> list[Check]:
    """Every check, in the order a user fixes things: IOMMU, kernel, devices, boot."""
    facts = _Facts(host)
    checks = [check_iommu(facts), check_cmdline(facts)]
    intremap = check_interrupt_remapping(facts)
    if intremap is not None:
        checks.append(intremap)
    checks += [check_vfio_module(facts), check_vfio_ids(facts, config)]
    passing: dict[str, PciDevice] = {}
    if config is None or not config.devices:
        where = config.path if config is not None and config.path else DEFAULT_CONFIG_PATH
        checks.append(_ok("config", f"no devices in {where}: checks of devices to pass "
                          "are skipped"))
    else:
        checks.append(_ok("config", f"{len(config.devices)} devices in "
                          f"{config.path or 'the config'}"))
        for index, entry in enumerate(config.devices):
            check, found = check_entry(facts, config, entry, index)
            checks.append(check)
            if check.status == "fail" and not found:
                continue
            group_check = check_group(facts, config, entry, found)
            if group_check is not None:
                checks.append(group_check)
            for dev in found:
                passing[dev.address] = dev
                if dev.iommu_group is not None:
                    for mate in facts.group_members(dev.iommu_group):
                        if mate.is_endpoint:
                            passing.setdefault(mate.address, mate)
        checks += check_boot_conflicts(facts, config)
    checks.append(check_boot_vga(facts, passing.values()))
    checks += check_vendor_reset(facts, passing.values())
    checks += check_driver_overrides(facts)
    checks.append(check_shim(facts, config))
    return checks


def worst(checks: Iterable[Check]) -> Status:
    """The most serious status among *checks*."""
    order = {"ok": 0, "warn": 1, "fail": 2}
    result: Status = "ok"
    for c in checks:
        if order[c.status] > order[result]:
            result = c.status
    return result
