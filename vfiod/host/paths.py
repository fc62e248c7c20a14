"""The map of the kernel's files: the one place a /sys, /proc or /dev path is spelt.

Modelled on libvirt's ``virPCIFile()`` and ``virPCIDriverDir()``: callers say *what*
they want (a device's ``driver_override``, a driver's folder, a group's node) and get
the host-absolute path; a Host maps it under its root. Nothing outside vfiod/host/ and
the simulated kernel (vfiod/sim/) spells these paths itself.
"""

from __future__ import annotations

SYSFS = "/sys"
PCI_BUS = "/sys/bus/pci"
PCI_DEVICES = "/sys/bus/pci/devices"
PCI_DRIVERS = "/sys/bus/pci/drivers"
IOMMU_GROUPS = "/sys/kernel/iommu_groups"
IOMMU_UNITS = "/sys/class/iommu"
VTCONSOLES = "/sys/class/vtconsole"
MODULES = "/sys/module"
DEV = "/dev"
VFIO_DIR = "/dev/vfio"
SOUND_DIR = "/dev/snd"
PROC = "/proc"
MOUNTS = "/proc/mounts"
SWAPS = "/proc/swaps"
#: Block devices by number (``8:16`` -> the disk's sysfs folder): how mounts are mapped.
DEV_BLOCK = "/sys/dev/block"
#: Mounted btrfs filesystems, each listing its member devices.
BTRFS_FS = "/sys/fs/btrfs"
ROUTES = "/proc/net/route"
IPV6_ROUTES = "/proc/net/ipv6_route"
CMDLINE = "/proc/cmdline"
CPUINFO = "/proc/cpuinfo"
OSRELEASE = "/proc/sys/kernel/osrelease"
#: A UUID the kernel draws at every boot: what binds the journal to one boot.
BOOT_ID = "/proc/sys/kernel/random/boot_id"
#: Every interrupt with its irqchip: remapped ones read ``IR-IO-APIC``, ``IR-PCI-MSI``.
INTERRUPTS = "/proc/interrupts"
#: Where modprobe reads its options, most specific first.
MODPROBE_D = ("/etc/modprobe.d", "/usr/lib/modprobe.d", "/lib/modprobe.d")
#: Where distributions install pci.ids.
PCI_IDS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids")


# -- PCI functions and drivers ------------------------------------------------------------
def device_dir(address: str) -> str:
    """A PCI function's sysfs folder: ``/sys/bus/pci/devices/0000:06:00.0``."""
    return f"{PCI_DEVICES}/{address}"


def device_file(address: str, name: str) -> str:
    """One of a PCI function's sysfs files (``driver_override``, ``driver/unbind``)."""
    return f"{PCI_DEVICES}/{address}/{name}"


def driver_dir(name: str) -> str:
    """A PCI driver's folder: ``/sys/bus/pci/drivers/vfio-pci`` (present when loaded)."""
    return f"{PCI_DRIVERS}/{name}"


def driver_file(name: str, file: str) -> str:
    """A PCI driver's control file (``bind``, ``new_id``)."""
    return f"{PCI_DRIVERS}/{name}/{file}"


def drivers_probe() -> str:
    """The bus's ``drivers_probe``: asks the kernel to bind a function to its best match."""
    return f"{PCI_BUS}/drivers_probe"


def pci_bus_file(bus: str, name: str) -> str:
    """A PCI bus's file (``/sys/class/pci_bus/0000:06/rescan``: rescans that bus only);
    *bus* as ``0000:06``."""
    return f"{SYSFS}/class/pci_bus/{bus}/{name}"


def sysfs_relative(path: str) -> str:
    """A canonical sysfs path without its ``/sys`` (``/devices/pci0000:00/...``)."""
    return path.removeprefix(SYSFS)


# -- IOMMU groups and VFIO --------------------------------------------------------------
def group_members_dir(group: int | str) -> str:
    """The folder listing an IOMMU group's functions."""
    return f"{IOMMU_GROUPS}/{group}/devices"


def group_node(group: int | str) -> str:
    """A group's VFIO node: ``/dev/vfio/31`` (a guest holds it open)."""
    return f"{VFIO_DIR}/{group}"


#: Not a path: what /proc/PID/fd/N links to for a VFIO device fd on Linux 6.1 (an
#: anonymous inode, naming no device). Host.holders() accepts it as a node.
VFIO_DEVICE_FD = "anon_inode:[vfio-device]"


def vfio_device_node(name: str) -> str:
    """A VFIO cdev node (``/dev/vfio/devices/vfio0``, the iommufd interface)."""
    return f"{VFIO_DIR}/devices/{name}"


# -- what hangs below a function ----------------------------------------------------------
def class_dir(klass: str) -> str:
    """A device class's folder (``/sys/class/drm``)."""
    return f"{SYSFS}/class/{klass}"


def class_entry(klass: str, name: str, file: str | None = None) -> str:
    """A class device (``/sys/class/net/enp0s25``) or one of its files."""
    base = f"{SYSFS}/class/{klass}/{name}"
    return f"{base}/{file}" if file else base


def vtconsole_file(vt: str, file: str) -> str:
    """A virtual console binding's file (``bind``, ``name``)."""
    return f"{VTCONSOLES}/{vt}/{file}"


def drm_node(name: str) -> str:
    """A DRM node (``/dev/dri/card0``)."""
    return f"{DEV}/dri/{name}"


def drm_card_uevent(card: str) -> str:
    """A DRM card's ``uevent`` file (``/sys/class/drm/card0/uevent``): writing ``remove``
    makes the kernel send a synthetic remove uevent of the card (the card stays), which
    tells a compositor that honours it to let go of the card."""
    return f"{SYSFS}/class/drm/{card}/uevent"


def nvidia_node(minor: int) -> str:
    """The proprietary NVIDIA driver's node for one GPU."""
    return f"{DEV}/nvidia{minor}"


def sound_node(name: str) -> str:
    """An ALSA node (``/dev/snd/pcmC1D3p``)."""
    return f"{SOUND_DIR}/{name}"


def block_node(name: str) -> str:
    """A block device's node (``/dev/sda2``); devtmpfs spells a ``!`` in the kernel's name
    (``cciss!c0d0``) as a folder."""
    return f"{DEV}/{name.replace('!', '/')}"


def block_by_number(major_minor: str) -> str:
    """A block device's link by number: ``/sys/dev/block/8:16``."""
    return f"{DEV_BLOCK}/{major_minor}"


def btrfs_devices(uuid: str) -> str:
    """The members of a mounted btrfs filesystem: ``/sys/fs/btrfs/UUID/devices``."""
    return f"{BTRFS_FS}/{uuid}/devices"


def is_device_node(path: str) -> bool:
    """True for a path under /dev (a mount source that names a block device)."""
    return path.startswith(DEV + "/")


def nvidia_information(address: str) -> str:
    """The proprietary NVIDIA driver's description of one GPU (its device minor)."""
    return f"{PROC}/driver/nvidia/gpus/{address}/information"


def udev_data(address: str) -> str:
    """What udevd stored about a PCI function (its hwdb name)."""
    return f"/run/udev/data/+pci:{address}"


# -- processes, modules, the kernel -----------------------------------------------------------
def module_dir(name: str) -> str:
    """A loaded (or built-in) module's folder; module names use ``_`` (vfio_pci)."""
    return f"{MODULES}/{name.replace('-', '_')}"


def module_parameter(module: str, name: str) -> str:
    """A loaded module's parameter (``vfio_iommu_type1``'s ``allow_unsafe_interrupts``)."""
    return f"{module_dir(module)}/parameters/{name}"


def iommu_unit_file(unit: str, name: str) -> str:
    """An Intel IOMMU unit's register file (``/sys/class/iommu/dmar0/intel-iommu/ecap``)."""
    return f"{IOMMU_UNITS}/{unit}/intel-iommu/{name}"


def initramfs_images(release: str) -> tuple[str, ...]:
    """Where the initramfs of kernel *release* is, by distribution convention.

    Debian and Ubuntu (initramfs-tools, and dracut as Debian packages it) write
    ``/boot/initrd.img-RELEASE``; Fedora's dracut ``/boot/initramfs-RELEASE.img``.
    """
    return (f"/boot/initrd.img-{release}", f"/boot/initramfs-{release}.img")


def modules_dir(release: str) -> str:
    """The kernel's module tree (``/lib/modules/6.8.0``)."""
    return f"/lib/modules/{release}"


def process_file(pid: int | str, name: str) -> str:
    """One of a process's /proc files (``comm``, ``fd``, ``mountinfo``, ``ns/mnt``);
    *pid* ``self`` is the reader's own."""
    return f"{PROC}/{pid}/{name}"
