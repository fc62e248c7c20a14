"""Records that cross the D-Bus or JSON boundary, as pydantic models."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, field_validator

from vfiod.printable import printable


class State(str, Enum):
    """A device's state as clients see it (DESIGN.md)."""

    HOST = "host"  # on a host driver
    VFIO = "vfio"  # on vfio-pci, free
    GUEST = "guest"  # on vfio-pci and held by a process
    UNBOUND = "unbound"  # no driver
    BUSY = "busy"  # an operation is running
    ERROR = "error"  # the last operation failed, or the device is unhealthy


class DeviceStatus(BaseModel):
    """Everything vfiod tells about one PCI function."""

    model_config = ConfigDict(frozen=True)

    address: str
    vendor_id: int
    device_id: int
    name: str
    class_code: int
    driver: str  # "" for none
    host_driver: str  # the driver it came from ("" when unknown)
    state: State
    iommu_group: int  # -1 for none
    holder: str  # "qemu-system-x86 (pid 4242)" or ""
    holder_pid: int  # 0 for none
    reset_methods: list[str]
    healthy: bool
    boot_vga: bool
    is_bridge: bool
    error: str = ""  # why the state is "error"
    #: What the host uses the device for, as the guards see it ("/dev/sda2 is mounted
    #: on / (ext4)"); "" when nothing. Binding is refused while this is not empty.
    used_by: str = ""
    # The health record (vfiod.device_records): its resets, guest runs and quarantine.
    reset_count: int = 0
    last_reset_method: str = ""  # "" before the first reset
    last_reset_outcome: str = ""  # "healthy" or "failed"; "" before the first reset
    last_reset_time: int = 0  # µs since the epoch; 0 before the first reset
    last_reset_rungs: int = 0  # rungs the last reset climbed; 0 when not told
    consecutive_reset_failures: int = 0
    #: The last guest runs, oldest first: (start µs, end µs or 0 while it runs, how it
    #: ended: running, clean, killed, failed or unknown).
    guest_runs: list[tuple[int, int, str]] = []
    quarantined: bool = False  # Bind refuses it until ``vfioctl reset --clear``
    quarantine_reason: str = ""  # why, with its history and how to lift it
    #: The host's desktop is being asked to let go of it (a forced bind of a GPU it
    #: holds waits for it to close its DRM nodes).
    releasing: bool = False

    @field_validator("name", "driver", "host_driver", "holder", "error", "used_by",
                     "last_reset_method", "quarantine_reason")
    @classmethod
    def _printable(cls, value: str) -> str:
        # Read from the machine (process names, the udev database, sysfs): made safe
        # here, once, for the D-Bus properties, Status and every client that prints them.
        return printable(value)

    @field_validator("reset_methods")
    @classmethod
    def _printable_methods(cls, value: list[str]) -> list[str]:
        return [printable(v) for v in value]

    @property
    def ids(self) -> str:
        """``10de:1b06``."""
        return f"{self.vendor_id:04x}:{self.device_id:04x}"

    def status_row(self) -> tuple[str, str, str, str, str, int, str]:
        """The ``(sssssis)`` row of Manager.Status."""
        return (self.address, self.ids, self.name, self.driver, self.state.value,
                self.iommu_group, self.holder)
