"""The guest's PCI layout: QEMU's device options and the addresses the guest sees.

One table serves both sides: qemu.py turns it into ``-device`` options, and the guest
tests import the addresses from it. Every root port sits on the root bus (``pcie.0``)
at a fixed slot, so the firmware numbers their secondary buses 1, 2, 3, ... in slot
order; ``test_layout`` in the guest checks that this holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Slots on the root bus for the two virtio-9p shares (after the root ports).
HOSTROOT_SLOT = 0x10
RESULTS_SLOT = 0x11
HOSTROOT_TAG = "hostroot"
RESULTS_TAG = "results"
#: The ich9-ahci's disk (``ahci_disk``): a sparse raw image in the run folder, for the
#: in-use guards' tests (mounted in another namespace, swap, dm). Its serial names it.
AHCI_DISK_BYTES = 64 * 1024 * 1024
AHCI_DISK_SERIAL = "vfiod-guard-disk"


@dataclass(frozen=True)
class Function:
    """One emulated PCI function behind a root port."""

    role: str  # what the tests call it
    qemu_device: str  # QEMU's -device driver name
    function: int  # the function number in its slot
    options: tuple[str, ...] = ()  # extra -device properties


@dataclass(frozen=True)
class Port:
    """A pcie-root-port on the root bus and what sits behind it."""

    id: str
    slot: int  # its slot on pcie.0
    bus: int  # the secondary bus number the guest gives it
    fast_link: bool  # x-speed=5: without it every bus reset fails (ENOTTY, ~2.1 s)
    functions: tuple[Function, ...]

    @property
    def address(self) -> str:
        """The root port's own guest address."""
        return f"0000:00:{self.slot:02x}.0"

    def address_of(self, function: Function) -> str:
        """The guest address of one of the port's functions."""
        return f"0000:{self.bus:02x}:00.{function.function}"


PORTS: tuple[Port, ...] = (
    Port("rp1", 0x02, 1, True, (
        Function("vga", "VGA", 0, ("multifunction=on",)),
        Function("hda", "intel-hda", 1),
    )),
    Port("rp2", 0x03, 2, True, (Function("nic", "e1000e", 0, ("netdev=n0",)),)),
    Port("rp3", 0x04, 3, True, (Function("xhci", "qemu-xhci", 0),)),
    # Deliberately without x-speed=5: the bus-reset failure path. It takes a PCIe
    # endpoint to fail (qemu-xhci and ich9-ahci reset fine below such a port).
    Port("rp4", 0x05, 4, False, (Function("virtio_gpu", "virtio-gpu-pci", 0),)),
    Port("rp5", 0x06, 5, True, (Function("ahci", "ich9-ahci", 0),)),
)


def address(role: str, ports: tuple[Port, ...] = PORTS) -> str:
    """The guest address of the function with this role (``"nic"`` -> 0000:02:00.0),
    in this tier's machine or in another tier's *ports*."""
    for port in ports:
        for function in port.functions:
            if function.role == role:
                return port.address_of(function)
    raise KeyError(role)


def port_of(role: str) -> Port:
    """The root port a role's function sits behind."""
    for port in PORTS:
        if any(f.role == role for f in port.functions):
            return port
    raise KeyError(role)


#: The guest addresses the tests use, by role.
VGA = address("vga")
HDA = address("hda")
NIC = address("nic")
XHCI = address("xhci")
VIRTIO_GPU = address("virtio_gpu")
AHCI = address("ahci")
#: Every function behind the root ports (what the guest tests may touch).
ALL_FUNCTIONS = tuple(port.address_of(f) for port in PORTS for f in port.functions)
#: The 9p shares that carry the guest's root and results: never touch these.
HOSTROOT_9P = f"0000:00:{HOSTROOT_SLOT:02x}.0"
RESULTS_9P = f"0000:00:{RESULTS_SLOT:02x}.0"


def make_disk(path: Path) -> Path:
    """Create the AHCI's disk image: sparse, AHCI_DISK_BYTES long, all zeros."""
    with open(path, "wb") as image:
        image.truncate(AHCI_DISK_BYTES)
    return path


def device_options(disk_image: Path | None = None) -> list[str]:
    """QEMU options for the root ports, the devices behind them and their backends;
    with *disk_image*, a raw disk on the ich9-ahci's first port."""
    return (["-audiodev", "none,id=snd0", "-netdev", "user,id=n0,restrict=on"]
            + port_options(PORTS, disk_image))


def port_options(ports: tuple[Port, ...], disk_image: Path | None = None) -> list[str]:
    """QEMU options for *ports* (pcie-root-ports on pcie.0) and the functions behind
    them (an intel-hda gets its codec on audiodev snd0; an ich9-ahci *disk_image*); the
    other tiers' machines are built from the same ports."""
    opts: list[str] = []
    for chassis, port in enumerate(ports, start=1):
        rp = (f"pcie-root-port,id={port.id},bus=pcie.0,addr=0x{port.slot:x},"
              f"chassis={chassis},slot={chassis}")
        if port.fast_link:
            rp += ",x-speed=5"
        opts += ["-device", rp]
        for function in port.functions:
            dev = ",".join((function.qemu_device, f"id={function.role}", f"bus={port.id}",
                            f"addr=00.{function.function}", *function.options))
            opts += ["-device", dev]
            if function.qemu_device == "intel-hda":
                opts += ["-device", f"hda-duplex,bus={function.role}.0,audiodev=snd0"]
            if function.qemu_device == "ich9-ahci" and disk_image is not None:
                file = str(disk_image).replace(",", ",,")
                opts += ["-drive", f"if=none,id=ahcidisk,format=raw,file={file}",
                         "-device", f"ide-hd,bus={function.role}.0,drive=ahcidisk,"
                                    f"serial={AHCI_DISK_SERIAL}"]
    return opts
