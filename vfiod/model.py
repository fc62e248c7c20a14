"""What vfiod knows about one PCI function, as read from the host by vfiod.discovery."""

from __future__ import annotations

from dataclasses import dataclass, field

VFIO_DRIVER = "vfio-pci"

# PCI class codes (the top 16 bits of the 24-bit class).
CLASS_BRIDGE_HOST = 0x0600
CLASS_BRIDGE_PCI = 0x0604

#: Bridges' 16-bit classes: host, PCI-to-PCI, CardBus, semi-transparent PCI-to-PCI. An
#: ISA bridge (0x0601, the LPC) is not one: it is an endpoint that moves with its group.
BRIDGE_CLASSES = (CLASS_BRIDGE_HOST, CLASS_BRIDGE_PCI, 0x0607, 0x0609)


def is_bridge_class(class_code: int) -> bool:
    """True for a bridge's 24-bit class: it stays on its driver, never needs binding."""
    return (class_code >> 8) in BRIDGE_CLASSES


def is_vfio_driver(driver: str | None) -> bool:
    """vfio-pci or a VFIO variant driver (libvirt's rule: the name contains "vfio")."""
    return bool(driver) and "vfio" in driver  # type: ignore[operator]


@dataclass(frozen=True)
class Children:
    """Host-side devices that hang below a PCI function (what the host would lose)."""

    drm: tuple[str, ...] = ()  # card0, renderD128
    sound: tuple[str, ...] = ()  # card1
    net: tuple[str, ...] = ()  # enp0s25
    block: tuple[str, ...] = ()  # sda, sda1, sda2 (disks and their partitions)
    input: tuple[str, ...] = ()  # input3 (keyboards, mice behind a USB controller)
    nvidia_minor: int | None = None  # /dev/nvidiaN for the proprietary driver


@dataclass(frozen=True)
class PciDevice:
    """One PCI function as the kernel shows it now."""

    address: str
    vendor: int
    device: int
    subsystem_vendor: int
    subsystem_device: int
    class_code: int  # 24-bit, e.g. 0x030000
    name: str
    driver: str | None
    driver_override: str | None
    iommu_group: int | None
    boot_vga: bool
    reset_methods: tuple[str, ...]
    modalias: str
    sysfs_path: str  # /devices/pci0000:00/0000:00:03.0/0000:06:00.0
    healthy: bool = True  # config space does not read all-ones
    children: Children = field(default_factory=Children)

    @property
    def ids(self) -> str:
        """``10de:1b06``."""
        return f"{self.vendor:04x}:{self.device:04x}"

    @property
    def base_class(self) -> int:
        """The 16-bit class (``0x0300`` for a VGA controller)."""
        return self.class_code >> 8

    @property
    def is_bridge(self) -> bool:
        """Bridges stay on their driver: they never need binding for a group to be viable."""
        return is_bridge_class(self.class_code)

    @property
    def is_endpoint(self) -> bool:
        """Anything that is not a bridge moves with its IOMMU group."""
        return not self.is_bridge

    @property
    def parent(self) -> str | None:
        """The address of the bridge above this function, None on a root bus."""
        parts = self.sysfs_path.strip("/").split("/")
        return parts[-2] if len(parts) >= 3 and ":" in parts[-2] and "." in parts[-2] else None

    @property
    def on_vfio(self) -> bool:
        """True when bound to vfio-pci or a vfio variant driver."""
        return is_vfio_driver(self.driver)
