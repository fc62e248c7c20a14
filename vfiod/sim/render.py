"""The real kernel's sysfs, /dev and /proc layout, as nodes for the Tree.

Each function returns the nodes one owner wants, from the profile (static) and the
kernel's state (dynamic). Only the layout lives here; what the kernel does on a write
lives in vfiod.sim.kernel.
"""

from __future__ import annotations

import posixpath
import struct
from typing import Protocol

from vfiod.sim.spec import AER_COMPLETION_TIMEOUT, VFIO_DRIVER, DeviceSpec, Disk, ModuleSpec, Profile, UsbInput
from vfiod.sim.machine_state import DeviceState
from vfiod.sim.tree import DIR, Control, Node, dev, link, relative_link, text


class Kernel(Protocol):
    """What the layout reads of the simulated kernel (vfiod.sim.kernel.Kernel has it)."""

    profile: Profile
    specs: dict[str, DeviceSpec]
    modules: dict[str, ModuleSpec]
    driver_module: dict[str, str]
    states: dict[str, DeviceState]
    loaded: list[str]
    drivers: list[str]
    vtcon: dict[str, int]
    autoprobe: int

    def sysfs_dir(self, address: str) -> str: ...
    def bridge_buses(self, address: str) -> tuple[int, int, int] | None: ...
    def multifunction(self, address: str) -> bool: ...
    def virtfns(self, address: str) -> list[str]: ...
    def group_members(self, group: int) -> list[str]: ...
    def vfio_members(self, group: int) -> list[str]: ...
    def children_active(self, address: str) -> bool: ...
    def module_users(self, name: str) -> list[str]: ...

WO = 0o200  # write-only attributes (bind, unbind, reset, ...)
RW = 0o644
VFIO_GROUP_MAJOR = 243
VFIO_DEVICE_MAJOR = 511
VTCONSOLES = {"vtcon0": "(S) dummy device", "vtcon1": "(M) frame buffer device"}


def rel(target: str, link_path: str) -> Node:
    """A link at *link_path* to *target*, relative as sysfs makes them."""
    return link(relative_link(target, link_path))


def pci_properties(spec: DeviceSpec, driver: str | None) -> dict[str, str]:
    """The uevent variables of a PCI device: DRIVER while it has one (dev_uevent), then
    pci-driver.c pci_uevent's."""
    return {
        **({"DRIVER": driver} if driver else {}),
        "PCI_CLASS": f"{spec.class_code:X}",
        "PCI_ID": f"{spec.vendor:04X}:{spec.device:04X}",
        "PCI_SUBSYS_ID": f"{spec.subsystem_vendor:04X}:{spec.subsystem_device:04X}",
        "PCI_SLOT_NAME": spec.address,
        "MODALIAS": spec.modalias,
    }


def _uevent_text(props: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in props.items())


def config_space(spec: DeviceSpec, *, enabled: bool, dead: bool, multifunction: bool,
                 buses: tuple[int, int, int] | None, broken: bool = False) -> bytes:
    """Configuration space: all ones for a dead device; 4096 bytes for a PCIe function
    (PCI Express capability at 0x40, AER at 0x100 when it has them), else 256."""
    size = 4096 if spec.pcie else 256
    if dead:
        return b"\xff" * size
    cfg = bytearray(size)
    struct.pack_into("<HHH", cfg, 0, spec.vendor, spec.device, 0x0406 if enabled else 0)
    cfg[8] = spec.revision
    cfg[9:12] = bytes((spec.class_code & 0xFF, (spec.class_code >> 8) & 0xFF,
                       spec.class_code >> 16))
    cfg[0x0E] = (0x01 if spec.is_bridge else 0x00) | (0x80 if multifunction else 0)
    if spec.is_bridge and buses is not None:
        cfg[0x18:0x1B] = bytes(buses)
    else:
        struct.pack_into("<HH", cfg, 0x2C, spec.subsystem_vendor, spec.subsystem_device)
        for i, (start, _size) in enumerate(spec.bars[:6]):
            # A "never_back" card lost its BAR programming; the kernel's restore did
            # not stick.
            struct.pack_into("<I", cfg, 0x10 + 4 * i, 0 if broken else start)
    if spec.pcie:
        struct.pack_into("<H", cfg, 0x06, 0x0010)  # status: capability list
        cfg[0x34] = 0x40
        root_port = spec.is_bridge and spec.parent is None
        port_type = (0x4 if root_port else 0x6) if spec.is_bridge else 0x0
        cfg[0x40:0x42] = bytes((0x10, 0x00))  # PCI Express, last capability
        struct.pack_into("<H", cfg, 0x42, 0x0002 | port_type << 4)
        # Link Capabilities: x16, 8 GT/s; ports report Data Link Layer Link Active.
        struct.pack_into("<I", cfg, 0x4C, 0x0103 | (1 << 20 if spec.is_bridge else 0))
        # Link Status: x16 at 8 GT/s; a port's link to the function below is active.
        struct.pack_into("<H", cfg, 0x52, 0x0103 | (1 << 13 if spec.is_bridge else 0))
        if spec.aer:
            struct.pack_into("<I", cfg, 0x100, 0x0001 | 2 << 16)  # AER v2, last
            struct.pack_into("<I", cfg, 0x104, AER_COMPLETION_TIMEOUT if broken else 0)
    return bytes(cfg)


def resources_text(spec: DeviceSpec) -> str:
    """The ``resource`` file: start, end and flags of each BAR as the kernel assigned
    it (IORESOURCE_MEM | IORESOURCE_SIZEALIGN for a 32-bit memory BAR), 13 lines."""
    zero = f"0x{0:016x} 0x{0:016x} 0x{0:016x}\n"
    lines = [f"0x{start:016x} 0x{start + size - 1:016x} 0x{0x40200:016x}\n"
             for start, size in spec.bars[:6]]
    return "".join(lines) + zero * (13 - len(lines))


# -- the skeleton ---------------------------------------------------------------------
def base_nodes(k: Kernel, pci_ids: str) -> dict[str, Node]:
    """Directories and files that exist for the machine's whole life."""
    p = k.profile
    nodes: dict[str, Node] = {}
    for d in ("/sys", "/sys/bus", "/sys/bus/pci", "/sys/bus/pci/devices",
              "/sys/bus/pci/drivers", "/sys/devices", "/sys/devices/pci0000:00",
              "/sys/devices/virtual", "/sys/devices/virtual/vtconsole", "/sys/class",
              "/sys/class/drm", "/sys/class/pci_bus", "/sys/class/sound", "/sys/class/net", "/sys/class/block",
              "/sys/class/input", "/sys/class/iommu", "/sys/class/vtconsole", "/sys/block",
              "/sys/dev", "/sys/dev/block",
              "/sys/module", "/sys/kernel", "/sys/kernel/iommu_groups", "/dev", "/dev/dri",
              "/dev/snd", "/dev/input", "/proc", "/proc/net", "/proc/driver", "/proc/sys", "/proc/sys/kernel",
              "/proc/sys/kernel/random", "/usr",
              "/usr/share", "/usr/share/misc"):
        nodes[d] = DIR
    nodes["/sys/bus/pci/drivers_probe"] = text("", WO, Control("bus", "drivers_probe"))
    nodes["/sys/bus/pci/rescan"] = text("", WO, Control("bus", "rescan"))
    nodes["/sys/bus/pci/drivers_autoprobe"] = text(f"{k.autoprobe}\n", RW,
                                                   Control("bus", "drivers_autoprobe"))
    # The root bus's own rescan (pci_bus class): rescans everything.
    root_bus = "/sys/devices/pci0000:00/pci_bus/0000:00"
    nodes["/sys/devices/pci0000:00/pci_bus"] = DIR
    nodes[root_bus] = DIR
    nodes[f"{root_bus}/rescan"] = text("", WO, Control("pcibus", "rescan"))  # no bridge
    nodes["/sys/class/pci_bus/0000:00"] = rel(root_bus, "/sys/class/pci_bus/0000:00")
    for name, title in VTCONSOLES.items():
        d = f"/sys/devices/virtual/vtconsole/{name}"
        nodes[d] = DIR
        nodes[f"{d}/name"] = text(title + "\n")
        nodes[f"/sys/class/vtconsole/{name}"] = rel(d, f"/sys/class/vtconsole/{name}")
    if p.iommu:
        d = "/sys/devices/virtual/iommu/dmar0"
        nodes["/sys/devices/virtual/iommu"] = DIR
        nodes[d] = DIR
        nodes[f"{d}/devices"] = DIR
        nodes["/sys/class/iommu/dmar0"] = rel(d, "/sys/class/iommu/dmar0")
        # As QEMU 7.2's intel-iommu,intremap=on reads (tests/vm): ECAP bit 3 (IR) set.
        nodes[f"{d}/intel-iommu"] = DIR
        nodes[f"{d}/intel-iommu/cap"] = text("d2008c22260286\n")
        nodes[f"{d}/intel-iommu/ecap"] = text("f00f4a\n")
    nodes["/proc/cmdline"] = text(p.cmdline + "\n")
    nodes["/proc/sys/kernel/random/boot_id"] = text(k.boot_id + "\n")
    nodes["/proc/interrupts"] = text(interrupts(p.iommu and "intremap=off" not in p.cmdline))
    nodes["/usr/share/misc/pci.ids"] = text(pci_ids, 0o644)
    return nodes


def interrupts(remapped: bool) -> str:
    """/proc/interrupts of a two-CPU machine: irqchips read IR-... when remapped."""
    prefix = "IR-" if remapped else ""
    rows = [("0", f"{prefix}IO-APIC", "2-edge", "timer"),
            ("9", f"{prefix}IO-APIC", "9-fasteoi", "acpi"),
            ("24", f"{prefix}PCI-MSI", "65536-edge", "ahci[0000:00:1f.2]"),
            ("25", f"{prefix}PCI-MSI", "409600-edge", "enp0s25")]
    lines = ["           CPU0       CPU1"]
    lines += [f"{n:>3}:{10:>11}{0:>11}  {chip:<12}{hw:<12}{name}" for n, chip, hw, name in rows]
    return "\n".join(lines) + "\nNMI:          0          0   Non-maskable interrupts\n"


def vtcon_nodes(k: Kernel) -> dict[str, Node]:
    """The vtconsoles' ``bind`` attributes (the framebuffer console can be unbound)."""
    return {f"/sys/devices/virtual/vtconsole/{name}/bind":
            text(f"{k.vtcon[name]}\n", RW, Control("vtcon", "bind", name))
            for name in VTCONSOLES}


def proc_modules_nodes(k: Kernel) -> dict[str, Node]:
    """/proc/modules: one line per loaded module, newest first like the kernel."""
    lines = []
    for name in reversed(k.loaded):
        users = k.module_users(name)
        used_by = ",".join(users) + "," if users else "-"
        lines.append(f"{name} {k.modules[name].size} {len(users)} {used_by} Live "
                     "0x0000000000000000\n")
    return {"/proc/modules": text("".join(lines))}


def proc_route_nodes(k: Kernel) -> dict[str, Node]:
    """/proc/net/route: the default route through every interface that exists now."""
    lines = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\t"
             "Window\tIRTT\n"]
    for spec in k.specs.values():
        net = spec.children.net
        if net is None or net.gateway is None or not k.children_active(spec.address):
            continue
        octets = net.gateway.split(".")
        gateway = "".join(f"{int(o):02X}" for o in reversed(octets))
        subnet = "".join(f"{int(o):02X}" for o in reversed([*octets[:3], "0"]))
        lines.append(f"{net.name}\t00000000\t{gateway}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n")
        lines.append(f"{net.name}\t{subnet}\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n")
    return {"/proc/net/route": text("".join(lines))}


# -- modules and drivers --------------------------------------------------------------
def module_nodes(k: Kernel, name: str) -> dict[str, Node]:
    """/sys/module/NAME and the /dev and /proc entries a loaded module creates."""
    if name not in k.loaded:
        return {}
    m = k.modules[name]
    d = f"/sys/module/{name}"
    nodes: dict[str, Node] = {d: DIR, f"{d}/initstate": text("live\n"),
                              f"{d}/refcnt": text(f"{len(k.module_users(name))}\n"),
                              f"{d}/holders": DIR}
    if m.driver:
        nodes[f"{d}/drivers"] = DIR
        nodes[f"{d}/drivers/pci:{m.driver}"] = rel(f"/sys/bus/pci/drivers/{m.driver}",
                                                   f"{d}/drivers/pci:{m.driver}")
    if name == "vfio":
        for extra in ("/dev/vfio", "/sys/class/vfio", "/sys/class/vfio-dev",
                      "/sys/devices/virtual/vfio", device_fd_dir(k.profile.vfio_cdev),
                      PRIVATE_DEVICE_FD_DIR):
            nodes[extra] = DIR
    if name == "nvidia":
        for extra in ("/proc/driver/nvidia", "/proc/driver/nvidia/gpus"):
            nodes[extra] = DIR
        nodes["/proc/driver/nvidia/version"] = text(
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  525.147.05\n")
    for node in m.dev_nodes:
        nodes[node] = dev(0o666)
    return nodes


def driver_nodes(k: Kernel, driver: str) -> dict[str, Node]:
    """/sys/bus/pci/drivers/DRIVER with its control files (device links are the devices')."""
    if driver not in k.drivers:
        return {}
    d = f"/sys/bus/pci/drivers/{driver}"
    nodes: dict[str, Node] = {d: DIR}
    for attr in ("bind", "unbind", "new_id", "remove_id"):
        nodes[f"{d}/{attr}"] = text("", WO, Control("driver", attr, driver))
    nodes[f"{d}/uevent"] = text("", WO)
    module = k.modules[k.driver_module[driver]]
    if not module.builtin:
        nodes[f"{d}/module"] = rel(f"/sys/module/{module.name}", f"{d}/module")
    return nodes


# -- IOMMU groups and VFIO ------------------------------------------------------------
def group_nodes(k: Kernel, group: int) -> dict[str, Node]:
    """/sys/kernel/iommu_groups/N while any of its devices exists."""
    if not k.group_members(group):
        return {}
    d = f"/sys/kernel/iommu_groups/{group}"
    kind = "identity" if "iommu=pt" in k.profile.cmdline else "DMA-FQ"
    return {d: DIR, f"{d}/devices": DIR, f"{d}/type": text(kind + "\n", RW),
            f"{d}/reserved_regions": text("0x00000000fee00000 0x00000000feefffff msi\n")}


def vfio_group_nodes(k: Kernel, group: int) -> dict[str, Node]:
    """/dev/vfio/N and its class device while a member is on vfio-pci."""
    if not k.vfio_members(group):
        return {}
    d = f"/sys/devices/virtual/vfio/{group}"
    minor = group % 256
    return {
        f"/dev/vfio/{group}": dev(0o600),
        d: DIR,
        f"{d}/dev": text(f"{VFIO_GROUP_MAJOR}:{minor}\n"),
        f"{d}/uevent": text(_uevent_text(vfio_group_properties(group)), RW),
        f"/sys/class/vfio/{group}": rel(d, f"/sys/class/vfio/{group}"),
    }


def vfio_group_properties(group: int) -> dict[str, str]:
    """uevent variables of /devices/virtual/vfio/N (vfio_devnode names the node but sets
    no mode: no DEVMODE; the node is devtmpfs's default 0600)."""
    return {"MAJOR": str(VFIO_GROUP_MAJOR), "MINOR": str(group % 256),
            "DEVNAME": f"vfio/{group}"}


def vfio_device_properties(index: int, cdev: bool) -> dict[str, str]:
    """uevent variables of a device's vfio-dev/vfioN: a device number and node only
    with VFIO device cdevs; on 6.1 the class device has none."""
    if not cdev:
        return {}
    return {"MAJOR": str(VFIO_DEVICE_MAJOR), "MINOR": str(index),
            "DEVNAME": f"vfio/devices/vfio{index}"}


#: Where the stand-ins for VFIO device fds live when the kernel has no device cdevs.
#: A real device fd is then an anonymous inode (``anon_inode:[vfio-device]``) that no
#: scan of /dev paths finds; a path outside /dev keeps the simulated one as hidden,
#: and ``.sim-`` marks it as the simulation's own, like its state file.
PRIVATE_DEVICE_FD_DIR = "/.sim-vfio-device"


def device_fd_dir(cdev: bool) -> str:
    """The directory of the nodes a guest opens to hold a VFIO device fd."""
    return "/dev/vfio/devices" if cdev else PRIVATE_DEVICE_FD_DIR


def device_fd_node(index: int, cdev: bool) -> str:
    """The node a guest holds for the device fd of vfio-dev/vfio*index*."""
    return f"{device_fd_dir(cdev)}/vfio{index}"


# -- a PCI device ---------------------------------------------------------------------
def device_nodes(k: Kernel, address: str) -> dict[str, Node]:
    """Everything about one PCI function: its directory, links to it, its children."""
    st = k.states[address]
    if not st.present:
        return {}
    spec = k.specs[address]
    d = k.sysfs_dir(address)
    ctl = {attr: Control("device", attr, address) for attr in (
        "driver_override", "reset", "reset_method", "remove", "rescan", "enable", "uevent")}
    nodes: dict[str, Node] = {
        d: DIR,
        f"{d}/vendor": text(f"0x{spec.vendor:04x}\n"),
        f"{d}/device": text(f"0x{spec.device:04x}\n"),
        f"{d}/subsystem_vendor": text(f"0x{spec.subsystem_vendor:04x}\n"),
        f"{d}/subsystem_device": text(f"0x{spec.subsystem_device:04x}\n"),
        f"{d}/class": text(f"0x{spec.class_code:06x}\n"),
        f"{d}/revision": text(f"0x{spec.revision:02x}\n"),
        f"{d}/modalias": text(spec.modalias + "\n"),
        f"{d}/config": Node("file", config_space(
            spec, enabled=st.enabled, dead=st.dead, multifunction=k.multifunction(address),
            buses=k.bridge_buses(address), broken=st.broken), RW),
        f"{d}/driver_override": text(f"{st.override or '(null)'}\n", RW, ctl["driver_override"]),
        f"{d}/uevent": text(_uevent_text(pci_properties(spec, st.driver)), RW, ctl["uevent"]),
        f"{d}/enable": text(f"{int(st.enabled)}\n", RW, ctl["enable"]),
        f"{d}/remove": text("", WO, ctl["remove"]),
        f"{d}/rescan": text("", WO, ctl["rescan"]),
        f"{d}/numa_node": text("-1\n", RW),
        f"{d}/subsystem": rel("/sys/bus/pci", f"{d}/subsystem"),
    }
    bus_link = f"/sys/bus/pci/devices/{address}"
    nodes[bus_link] = rel(d, bus_link)
    if spec.reset_methods and st.reset_files:
        selected = spec.reset_methods if st.reset_selected is None else st.reset_selected
        # reset_method_show ends the list with a newline only when it is not empty.
        shown = " ".join(selected) + "\n" if selected else ""
        nodes[f"{d}/reset_method"] = text(shown, RW, ctl["reset_method"])
        nodes[f"{d}/reset"] = text("", WO, ctl["reset"])
    if spec.bars:
        nodes[f"{d}/resource"] = text(resources_text(spec))
    buses = k.bridge_buses(address)
    if spec.is_bridge and buses is not None and buses[1]:
        # The bridge's secondary bus (pci_bus class): its rescan rescans only that bus.
        bus = f"{address[:4]}:{buses[1]:02x}"
        bus_dir = f"{d}/pci_bus/{bus}"
        nodes[f"{d}/pci_bus"] = DIR
        nodes[bus_dir] = DIR
        nodes[f"{bus_dir}/rescan"] = text("", WO, Control("pcibus", "rescan", address))
        nodes[f"/sys/class/pci_bus/{bus}"] = rel(bus_dir, f"/sys/class/pci_bus/{bus}")
    if spec.is_vga:
        nodes[f"{d}/boot_vga"] = text(f"{int(spec.boot_vga)}\n")
    if st.driver and not st.releasing:
        drv_dir = f"/sys/bus/pci/drivers/{st.driver}"
        nodes[f"{d}/driver"] = rel(drv_dir, f"{d}/driver")
        nodes[f"{drv_dir}/{address}"] = rel(d, f"{drv_dir}/{address}")
    if st.group is not None:
        g = f"/sys/kernel/iommu_groups/{st.group}"
        nodes[f"{d}/iommu_group"] = rel(g, f"{d}/iommu_group")
        nodes[f"{g}/devices/{address}"] = rel(d, f"{g}/devices/{address}")
        dmar = "/sys/devices/virtual/iommu/dmar0"
        nodes[f"{d}/iommu"] = rel(dmar, f"{d}/iommu")
        nodes[f"{dmar}/devices/{address}"] = rel(d, f"{dmar}/devices/{address}")
    if spec.total_vfs:
        nodes[f"{d}/sriov_totalvfs"] = text(f"{spec.total_vfs}\n")
        nodes[f"{d}/sriov_numvfs"] = text(f"{spec.total_vfs}\n", RW)
        for i, vf in enumerate(k.virtfns(address)):
            if k.states[vf].present:
                nodes[f"{d}/virtfn{i}"] = rel(k.sysfs_dir(vf), f"{d}/virtfn{i}")
    if spec.physfn is not None and k.states[spec.physfn].present:
        nodes[f"{d}/physfn"] = rel(k.sysfs_dir(spec.physfn), f"{d}/physfn")
    if st.driver == VFIO_DRIVER and st.vfio_index is not None:
        name = f"vfio{st.vfio_index}"
        vd = f"{d}/vfio-dev/{name}"
        nodes[f"{d}/vfio-dev"] = DIR
        nodes[vd] = DIR
        cdev = k.profile.vfio_cdev
        if cdev:
            nodes[f"{vd}/dev"] = text(f"{VFIO_DEVICE_MAJOR}:{st.vfio_index}\n")
        nodes[f"{vd}/uevent"] = text(
            _uevent_text(vfio_device_properties(st.vfio_index, cdev)), RW)
        nodes[f"/sys/class/vfio-dev/{name}"] = rel(vd, f"/sys/class/vfio-dev/{name}")
        nodes[device_fd_node(st.vfio_index, cdev)] = dev(0o600)
        # A device fd got through the group is an anonymous inode on every kernel.
        nodes[device_fd_node(st.vfio_index, False)] = dev(0o600)
    if k.children_active(address):
        nodes.update(children_nodes(spec, d))
    return nodes


def _usb_port_dir(d: str, inp: UsbInput) -> str:
    return f"{d}/usb{inp.bus}/{inp.port}"


def _input_dir(d: str, inp: UsbInput) -> str:
    port = _usb_port_dir(d, inp)
    hid = f"{port}/{inp.port}:1.0/0003:{inp.vendor:04X}:{inp.product:04X}.{inp.hid_seq:04X}"
    return f"{hid}/input/input{inp.input_index}"


def disk_dir(d: str, disk: Disk) -> str:
    h = disk.scsi_host
    return f"{d}/ata{disk.port}/host{h}/target{h}:0:0/{h}:0:0:0/block/{disk.name}"


def child_devices(spec: DeviceSpec, d: str) -> list[tuple[str, str, dict[str, str]]]:
    """The class devices a host driver creates, as (sysfs dir, subsystem, uevent vars).

    In creation order; the driver removes them in the reverse order.
    """
    c = spec.children
    out: list[tuple[str, str, dict[str, str]]] = []
    for bus in c.usb_buses:
        out.append((f"{d}/usb{bus}", "usb", {"DEVTYPE": "usb_device", "BUSNUM": f"{bus:03d}",
                                             "DEVNAME": f"bus/usb/{bus:03d}/001"}))
    for inp in c.inputs:
        port, ipath = _usb_port_dir(d, inp), _input_dir(d, inp)
        out.append((port, "usb", {"DEVTYPE": "usb_device",
                                  "PRODUCT": f"{inp.vendor:x}/{inp.product:x}/110"}))
        out.append((f"{port}/{inp.port}:1.0", "usb", {"DEVTYPE": "usb_interface"}))
        out.append((posixpath.dirname(posixpath.dirname(ipath)), "hid", {"HID_NAME": inp.name}))
        out.append((ipath, "input", {"NAME": f'"{inp.name}"'}))
        out.append((f"{ipath}/event{inp.event_index}", "input",
                    {"DEVNAME": f"input/event{inp.event_index}", "MAJOR": "13",
                     "MINOR": str(64 + inp.event_index)}))
    for disk in c.disks:
        blk = disk_dir(d, disk)
        out.append((blk, "block", {"DEVNAME": disk.name, "DEVTYPE": "disk", "MAJOR": "8",
                                   "MINOR": str(disk.minor)}))
        for i, part in enumerate(disk.partition_names, 1):
            out.append((f"{blk}/{part}", "block", {"DEVNAME": part, "DEVTYPE": "partition",
                                                   "MAJOR": "8", "MINOR": str(disk.minor + i),
                                                   "PARTN": str(i)}))
    if c.net is not None:
        out.append((f"{d}/net/{c.net.name}", "net", {"INTERFACE": c.net.name,
                                                     "IFINDEX": str(c.net.ifindex)}))
    if c.sound_card is not None:
        n = c.sound_card
        out.append((f"{d}/sound/card{n}", "sound", {}))
        out.append((f"{d}/sound/card{n}/controlC{n}", "sound",
                    {"DEVNAME": f"snd/controlC{n}", "MAJOR": "116", "MINOR": str(32 * n)}))
        for i, pcm in enumerate(c.pcm, 1):
            out.append((f"{d}/sound/card{n}/pcmC{n}{pcm}", "sound",
                        {"DEVNAME": f"snd/pcmC{n}{pcm}", "MAJOR": "116",
                         "MINOR": str(32 * n + i)}))
    if c.drm_card is not None:
        out.append((f"{d}/drm/card{c.drm_card}", "drm",
                    {"DEVNAME": f"dri/card{c.drm_card}", "DEVTYPE": "drm_minor",
                     "MAJOR": "226", "MINOR": str(c.drm_card)}))
    if c.drm_render is not None:
        out.append((f"{d}/drm/renderD{c.drm_render}", "drm",
                    {"DEVNAME": f"dri/renderD{c.drm_render}", "DEVTYPE": "drm_minor",
                     "MAJOR": "226", "MINOR": str(c.drm_render)}))
    return out


def children_nodes(spec: DeviceSpec, d: str) -> dict[str, Node]:
    """Files, class links and /dev nodes of the device's children."""
    c = spec.children
    nodes: dict[str, Node] = {}

    def dirs(path: str) -> None:
        # Every directory from the device's own down to *path*.
        parts = path[len(d) + 1:].split("/")
        for i in range(1, len(parts) + 1):
            nodes[d + "/" + "/".join(parts[:i])] = DIR

    def cls(klass: str, name: str, target: str) -> None:
        nodes[f"/sys/class/{klass}/{name}"] = rel(target, f"/sys/class/{klass}/{name}")

    for path, subsystem, props in child_devices(spec, d):
        dirs(path)
        if subsystem == "drm":
            # Every device has a uevent file; the DRM minors' is the one vfiod writes
            # (a synthetic "remove" tells the compositor its card is going).
            nodes[f"{path}/uevent"] = text(_uevent_text(props), RW, Control(
                "drm", "uevent", f"{spec.address}/{posixpath.basename(path)}"))
        if "MAJOR" in props and "MINOR" in props:
            nodes[f"{path}/dev"] = text(f"{props['MAJOR']}:{props['MINOR']}\n")
        if "DEVNAME" in props and not props["DEVNAME"].startswith("bus/"):
            nodes[f"/dev/{props['DEVNAME']}"] = dev()
    for bus in c.usb_buses:
        u = f"{d}/usb{bus}"
        nodes[f"{u}/idVendor"] = text("1d6b\n")
        nodes[f"{u}/idProduct"] = text(f"{3 if bus % 2 == 0 else 2:04x}\n")
        nodes[f"{u}/product"] = text("xHCI Host Controller\n")
    for inp in c.inputs:
        port, ipath = _usb_port_dir(d, inp), _input_dir(d, inp)
        nodes[f"{port}/idVendor"] = text(f"{inp.vendor:04x}\n")
        nodes[f"{port}/idProduct"] = text(f"{inp.product:04x}\n")
        nodes[f"{port}/product"] = text(inp.name + "\n")
        nodes[f"{ipath}/name"] = text(inp.name + "\n")
        cls("input", f"input{inp.input_index}", ipath)
        cls("input", f"event{inp.event_index}", f"{ipath}/event{inp.event_index}")
    for disk in c.disks:
        blk = disk_dir(d, disk)
        nodes[f"{blk}/size"] = text(f"{disk.sectors}\n")
        nodes[f"{blk}/removable"] = text("0\n")
        nodes[f"{blk}/holders"] = DIR
        cls("block", disk.name, blk)
        nodes[f"/sys/block/{disk.name}"] = rel(blk, f"/sys/block/{disk.name}")
        for i, part in enumerate(disk.partition_names, 1):
            nodes[f"{blk}/{part}/partition"] = text(f"{i}\n")
            nodes[f"{blk}/{part}/holders"] = DIR
            cls("block", part, f"{blk}/{part}")
    if c.net is not None:
        n = f"{d}/net/{c.net.name}"
        nodes.update({
            f"{n}/address": text(c.net.mac + "\n"),
            f"{n}/operstate": text("up\n" if c.net.up else "down\n"),
            f"{n}/carrier": text("1\n" if c.net.up else "0\n"),
            f"{n}/flags": text("0x1003\n" if c.net.up else "0x1002\n", RW),
            f"{n}/ifindex": text(f"{c.net.ifindex}\n"),
            f"{n}/mtu": text("1500\n", RW),
            f"{n}/type": text("1\n"),
        })
        cls("net", c.net.name, n)
    if c.sound_card is not None:
        s = f"{d}/sound/card{c.sound_card}"
        nodes[f"{s}/number"] = text(f"{c.sound_card}\n")
        nodes[f"{s}/id"] = text(("NVidia" if spec.vendor == 0x10DE else "PCH")
                                + (f"_{c.sound_card}" if spec.vendor == 0x10DE else "") + "\n")
        cls("sound", f"card{c.sound_card}", s)
        cls("sound", f"controlC{c.sound_card}", f"{s}/controlC{c.sound_card}")
        for pcm in c.pcm:
            cls("sound", f"pcmC{c.sound_card}{pcm}", f"{s}/pcmC{c.sound_card}{pcm}")
    if c.drm_card is not None:
        cls("drm", f"card{c.drm_card}", f"{d}/drm/card{c.drm_card}")
    if c.drm_render is not None:
        cls("drm", f"renderD{c.drm_render}", f"{d}/drm/renderD{c.drm_render}")
    if c.nvidia_minor is not None:
        info = f"/proc/driver/nvidia/gpus/{spec.address}"
        nodes[info] = DIR
        nodes[f"{info}/information"] = text(
            f"Model: \t\t {c.gpu_model}\n"
            f"IRQ:   \t\t {16 + c.nvidia_minor}\n"
            f"GPU UUID: \t GPU-{spec.address.replace(':', '').replace('.', '')}-sim\n"
            "Video BIOS: \t 86.02.39.00.01\n"
            "Bus Type: \t PCIe\n"
            "DMA Size: \t 47 bits\n"
            "DMA Mask: \t 0x7fffffffffff\n"
            f"Bus Location: \t {spec.address}\n"
            f"Device Minor: \t {c.nvidia_minor}\n"
            "GPU Excluded:\t No\n")
        nodes[f"/dev/nvidia{c.nvidia_minor}"] = dev(0o666)
    return nodes
