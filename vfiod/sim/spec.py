"""The static description of a simulated machine: its PCI functions, modules and mounts.

A profile is pure data. The kernel model (vfiod.sim.kernel) keeps what changes (which
driver a device is on, its override, whether it is dead) and the renderer
(vfiod.sim.render) turns both into a sysfs-shaped tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VFIO_DRIVER = "vfio-pci"

# The reset method names the kernel knows, in its order of preference (pci.c).
RESET_METHOD_NAMES = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")


#: How dying cards misbehave after a guest used them (DeviceSpec.reset_bug):
#: "amd": the AMD reset bug: FLR, pm, bus and VFIO's hot reset report success and leave
#:   it dead (config space all ones); device_specific (with vendor-reset loaded) or a
#:   remove and rescan bring it back.
#: "never_back": every reset, and a remove and rescan, leave its BARs unprogrammed and a
#:   Completion Timeout in its AER status: nothing short of a power cycle helps.
RESET_BUGS = ("amd", "never_back")
#: Uncorrectable AER status bit 14: Completion Timeout.
AER_COMPLETION_TIMEOUT = 1 << 14


def modalias(vendor: int, device: int, subvendor: int, subdevice: int, klass: int) -> str:
    """pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X, as the kernel formats it."""
    return (f"pci:v{vendor:08X}d{device:08X}sv{subvendor:08X}sd{subdevice:08X}"
            f"bc{klass >> 16 & 0xFF:02X}sc{klass >> 8 & 0xFF:02X}i{klass & 0xFF:02X}")


@dataclass(frozen=True)
class Disk:
    """A SATA disk behind an AHCI controller, with its partitions."""

    name: str  # sda
    minor: int  # 0 for sda, 16 for sdb (major is 8)
    partitions: int  # sda1..sdaN
    port: int  # ata port number: ata1 -> 1
    scsi_host: int  # host0 -> 0
    sectors: int = 1953525168

    @property
    def partition_names(self) -> tuple[str, ...]:
        """``sda1``, ``sda2``, ... in order."""
        return tuple(f"{self.name}{i}" for i in range(1, self.partitions + 1))


@dataclass(frozen=True)
class NetIface:
    """A network interface a NIC driver creates."""

    name: str
    mac: str
    ifindex: int
    gateway: str | None = None  # dotted quad of the default route through it
    up: bool = True  # administratively up (nothing configures the test guest's NIC)


@dataclass(frozen=True)
class UsbInput:
    """A USB HID device (keyboard) behind a host controller's root hub port."""

    bus: int  # usb1
    port: str  # 1-2
    vendor: int
    product: int
    name: str
    hid_seq: int  # the .0001 of 0003:046D:C31C.0001
    input_index: int  # input3
    event_index: int  # event3


@dataclass(frozen=True)
class Children:
    """What the device's host driver creates below it (gone while on another driver)."""

    drm_card: int | None = None
    drm_render: int | None = None
    nvidia_minor: int | None = None
    gpu_model: str = ""
    sound_card: int | None = None
    pcm: tuple[str, ...] = ()  # "D3p": pcmC1D3p
    net: NetIface | None = None
    disks: tuple[Disk, ...] = ()
    usb_buses: tuple[int, ...] = ()  # root hubs: usb1, usb2
    inputs: tuple[UsbInput, ...] = ()


@dataclass(frozen=True)
class DeviceSpec:
    """One PCI function of the machine as it was built."""

    address: str
    vendor: int
    device: int
    subsystem_vendor: int
    subsystem_device: int
    class_code: int  # 24-bit
    revision: int
    parent: str | None  # the bridge above it; None on the root bus
    group: int | None  # IOMMU group; None when the IOMMU is off
    host_driver: str | None = None  # the driver whose binding creates `children`
    boot_vga: bool = False
    reset_methods: tuple[str, ...] = ()  # best first, as reset_method lists them
    children: Children = field(default_factory=Children)
    physfn: str | None = None  # an SR-IOV VF's PF
    total_vfs: int = 0  # an SR-IOV PF's VF count
    # (method, outcome) where the hardware, not the topology, decides what a method
    # does: ("bus", "enotty") for a PCIe endpoint below a port whose link never reports
    # active (QEMU's root port without x-speed). Outcomes as Kernel.set_reset_outcome.
    reset_outcomes: tuple[tuple[str, str], ...] = ()
    # How long each reset takes in the kernel, in seconds (times the SimHost's
    # time_scale): ("flr", 60.0) for a function the kernel waits its whole 60 s for.
    # Also "hot_reset", "remove" and "rescan". Not listed: instant.
    reset_seconds: tuple[tuple[str, float], ...] = ()
    # How a dying card misbehaves once a guest has used it (RESET_BUGS): "" for none.
    reset_bug: str = ""
    # Config space beyond the ids: memory BARs (start, size), a PCI Express capability
    # (with its Link Status; a root port's reports Data Link Layer Link Active) and AER.
    # Without them the function has the 256 bytes of a conventional one.
    bars: tuple[tuple[int, int], ...] = ()
    pcie: bool = False
    aer: bool = False

    @property
    def bus(self) -> str:
        """``0000:06`` of ``0000:06:00.0``."""
        return self.address.rsplit(":", 1)[0]

    @property
    def is_bridge(self) -> bool:
        """PCI-to-PCI bridges (root ports, switch ports)."""
        return self.class_code >> 8 == 0x0604

    @property
    def is_vga(self) -> bool:
        """VGA-class devices have a boot_vga attribute."""
        return self.class_code >> 8 == 0x0300

    @property
    def modalias(self) -> str:
        """The modalias the kernel shows (and matches module aliases against)."""
        return modalias(self.vendor, self.device, self.subsystem_vendor,
                        self.subsystem_device, self.class_code)


@dataclass(frozen=True)
class ModuleSpec:
    """A kernel module: the PCI driver it registers and the modaliases it claims."""

    name: str
    driver: str | None = None
    aliases: tuple[str, ...] = ()  # fnmatch patterns, as in modules.alias
    depends: tuple[str, ...] = ()
    builtin: bool = False
    size: int = 16384
    dev_nodes: tuple[str, ...] = ()  # /dev nodes it creates when loaded


@dataclass(frozen=True)
class Desktop:
    """The host's graphical session: a process holding a GPU's nodes."""

    comm: str
    gpu: str  # the address whose host driver must be bound for the session to run
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Profile:
    """A whole simulated machine."""

    name: str
    description: str
    iommu: bool
    devices: tuple[DeviceSpec, ...]
    modules: tuple[ModuleSpec, ...]
    boot_modules: tuple[str, ...]  # loaded at boot, in this order
    cmdline: str
    mounts: tuple[str, ...] = ()  # /proc/mounts lines
    swaps: tuple[str, ...] = ()  # swap partitions (/dev/sda3)
    desktop: Desktop | None = None
    # VFIO device cdevs (/dev/vfio/devices/vfioN, Linux 6.6+ with CONFIG_VFIO_DEVICE_CDEV).
    # Without them (Debian 12's 6.1) a device fd is an anonymous inode that no /proc scan
    # can name, and vfio-dev/vfioN has no device number.
    vfio_cdev: bool = True
