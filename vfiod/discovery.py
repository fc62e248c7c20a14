"""Read every PCI function, and what hangs below it, from a Host.

Discovery only reads. It is the engine's and the doctor's view of the machine:
``scan(host)`` returns a fresh snapshot; ``read_device`` re-reads one function.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from vfiod.host import paths
from vfiod.host.base import Host
from vfiod.model import Children, PciDevice
from vfiod.pciids import PciIds

_ADDRESS_IN_PATH = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")
# Block devices that are partitions carry a "partition" file; disks do not.
_CHILD_CLASSES = ("drm", "sound", "net", "block", "input")


def pci_ancestor(devpath: str) -> str | None:
    """The deepest PCI address in a sysfs device path (the function a child hangs on)."""
    for part in reversed(devpath.split("/")):
        if _ADDRESS_IN_PATH.match(part):
            return part
    return None


@dataclass
class ChildIndex:
    """Host devices by the PCI function they hang below, built once per scan."""

    by_address: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def children(self, host: Host, address: str) -> Children:
        """The Children record of one function."""
        found = self.by_address.get(address, {})
        minor = None
        info = host.read_text(paths.nvidia_information(address))
        if info:
            m = re.search(r"^Device Minor:\s*(\d+)", info, re.M)
            minor = int(m.group(1)) if m else None
        return Children(
            drm=tuple(found.get("drm", ())),
            sound=tuple(found.get("sound", ())),
            net=tuple(found.get("net", ())),
            block=tuple(found.get("block", ())),
            input=tuple(found.get("input", ())),
            nvidia_minor=minor,
        )


def index_children(host: Host) -> ChildIndex:
    """Map /sys/class/{drm,sound,net,block,input} entries to their PCI function."""
    index = ChildIndex()
    for klass in _CHILD_CLASSES:
        for entry in host.listdir(paths.class_dir(klass)):
            if klass == "drm" and not (entry.startswith("card") or entry.startswith("renderD")):
                continue  # connectors (card0-DP-1) and version files
            if klass == "drm" and "-" in entry:
                continue
            if klass == "sound" and not entry.startswith("card"):
                continue
            if klass == "input" and not entry.startswith("input"):
                continue
            # The entry is one link into /sys/devices: the deepest PCI address in its
            # target as stored is the function, without resolving it element by
            # element (every reread of a function indexes every class entry).
            link = paths.class_entry(klass, entry)
            target = host.readlink(link)
            if target is None or not host.exists(link):
                target = host.resolve(link)  # not a link; or a dangling one: gone
            if target is None:
                continue
            address = pci_ancestor(target)
            if address is None:
                continue
            index.by_address.setdefault(address, {}).setdefault(klass, []).append(entry)
    return index


def load_pci_ids(host: Host) -> PciIds:
    """The host's pci.ids (empty when the machine has none)."""
    for path in paths.PCI_IDS:
        text = host.read_text(path)
        if text:
            return PciIds.parse(text)
    return PciIds()


def _udev_name(host: Host, address: str) -> str | None:
    """The hwdb name udev stored for the device, when udevd has seen it."""
    text = host.read_text(paths.udev_data(address))
    if not text:
        return None
    props = dict(line[2:].split("=", 1) for line in text.splitlines()
                 if line.startswith("E:") and "=" in line)
    vendor = props.get("ID_VENDOR_FROM_DATABASE")
    model = props.get("ID_MODEL_FROM_DATABASE")
    if vendor and model:
        return f"{vendor} {model}"
    return None


def _device_path(host: Host, address: str) -> str | None:
    """The function's canonical sysfs path (``/sys/devices/pci0000:00/.../ADDR``).

    /sys/bus/pci/devices/ADDR is one relative link into /sys/devices, whose folders
    are no links: reading that link is the answer, where a full resolve lstat()s every
    element of the path (a third of a 4,096-function scan, issue 14's profile). Any
    other shape is resolved the long way.
    """
    link = paths.device_dir(address)
    target = host.readlink(link)
    if target is not None:
        found = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
        if found.startswith(paths.SYSFS + "/devices/") and found.endswith("/" + address):
            return found
    return host.resolve(link)


def read_device(host: Host, address: str, ids: PciIds, children: ChildIndex) -> PciDevice | None:
    """Read one PCI function; None when it is gone."""
    # Each read is one syscall that answers None once the device is gone (removed or
    # hot-unplugged while it is read): a function without a vendor file is gone.
    sysfs_path = _device_path(host, address)
    if sysfs_path is None:
        return None
    vendor = host.read_int(paths.device_file(address, "vendor"), 16)
    if vendor is None:
        return None
    device = host.read_int(paths.device_file(address, "device"), 16) or 0
    class_code = host.read_int(paths.device_file(address, "class"), 16) or 0
    override = host.read_text(paths.device_file(address, "driver_override"))
    if override in ("(null)", ""):
        override = None
    group_name = host.link_name(paths.device_file(address, "iommu_group"))
    reset_method = host.read_text(paths.device_file(address, "reset_method"))
    if reset_method is not None:
        methods = tuple(reset_method.split())
    elif host.exists(paths.device_file(address, "reset")):
        methods = ("default",)  # kernels before 5.15: a reset file, methods not listed
    else:
        methods = ()
    config = host.read_bytes(paths.device_file(address, "config"), 4)
    healthy = not (config is not None and len(config) >= 2 and config[:2] == b"\xff\xff")
    name = _udev_name(host, address) or ids.name(vendor, device, class_code)
    return PciDevice(
        address=address,
        vendor=vendor,
        device=device,
        subsystem_vendor=host.read_int(paths.device_file(address, "subsystem_vendor"), 16) or 0,
        subsystem_device=host.read_int(paths.device_file(address, "subsystem_device"), 16) or 0,
        class_code=class_code,
        name=name,
        driver=host.link_name(paths.device_file(address, "driver")),
        driver_override=override,
        iommu_group=int(group_name) if group_name and group_name.isdigit() else None,
        boot_vga=host.read_int(paths.device_file(address, "boot_vga")) == 1,
        reset_methods=methods,
        modalias=host.read_text(paths.device_file(address, "modalias")) or "",
        sysfs_path=paths.sysfs_relative(sysfs_path),
        healthy=healthy,
        children=children.children(host, address),
    )


class Scanner:
    """Reads devices from a host, keeping the name database loaded between scans."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._ids: PciIds | None = None

    @property
    def ids(self) -> PciIds:
        """The host's pci.ids, parsed on first use."""
        if self._ids is None:
            self._ids = load_pci_ids(self.host)
        return self._ids

    def addresses(self) -> list[str]:
        """Every PCI function the host lists."""
        return [a for a in self.host.listdir(paths.PCI_DEVICES) if _ADDRESS_IN_PATH.match(a)]

    def scan(self) -> dict[str, PciDevice]:
        """A fresh snapshot of every PCI function."""
        return self.read(self.addresses())

    def read(self, addresses: Iterable[str]) -> dict[str, PciDevice]:
        """Re-read some functions (absent ones are left out)."""
        index = index_children(self.host)
        out: dict[str, PciDevice] = {}
        for address in addresses:
            dev = read_device(self.host, address, self.ids, index)
            if dev is not None:
                out[address] = dev
        return out

    def group_members(self, group: int) -> list[str]:
        """Addresses in an IOMMU group, as the kernel lists them."""
        return [a for a in self.host.listdir(paths.group_members_dir(group))
                if _ADDRESS_IN_PATH.match(a)]


def scan(host: Host) -> dict[str, PciDevice]:
    """Every PCI function of *host*, by address."""
    return Scanner(host).scan()


def iommu_enabled(host: Host) -> bool:
    """True when the kernel has IOMMU groups (an IOMMU is on)."""
    return bool(host.listdir(paths.IOMMU_GROUPS))
