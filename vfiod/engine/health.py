"""Is a PCI function healthy after a reset? Read from its configuration space.

Not only "config space does not read all ones": the identity the kernel enumerated
(vendor and device id), a header type that is not 0x7f, the command register and the
BARs as they were (the kernel restores them after its resets; after a remove and rescan
it assigns them again, as its ``resource`` file lists), the link up where the function
has a PCIe link, and no new uncorrectable AER status where AER is present. Each failed
check is named.

Parsing is pure (bytes in, sentences out: ``problems``); ``Health`` reads what it needs
through the host boundary.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vfiod.host import paths
from vfiod.host.base import Host
from vfiod.model import PciDevice

#: The whole configuration space (4096 bytes for PCIe, 256 for conventional PCI).
CONFIG_SIZE = 4096
_COMMAND = 0x04
_STATUS = 0x06
_HEADER_TYPE = 0x0E
_BAR0 = 0x10
_CAP_POINTER = 0x34
_STATUS_CAP_LIST = 0x0010
#: The command bits that say what the function decodes and whether it masters the bus
#: (I/O, memory, bus master) and its INTx disable: what a reset that loses state clears.
COMMAND_MASK = 0x0407
_CAP_PCIE = 0x10
_EXT_CAP_AER = 0x0001
_EXT_CAP_START = 0x100
#: PCIe device/port types whose Link Status describes a link above them: endpoints,
#: legacy endpoints, switch upstream ports, PCIe-to-PCI bridges.
_TYPES_WITH_UPSTREAM_LINK = (0x0, 0x1, 0x5, 0x7)
#: resource file flags (include/linux/ioport.h).
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
_AER_UNCORRECTABLE = {
    4: "Data Link Protocol", 5: "Surprise Down", 12: "Poisoned TLP",
    13: "Flow Control Protocol", 14: "Completion Timeout", 15: "Completer Abort",
    16: "Unexpected Completion", 17: "Receiver Overflow", 18: "Malformed TLP",
    19: "ECRC", 20: "Unsupported Request", 21: "ACS Violation",
}


def _u16(cfg: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", cfg, offset)[0]) if len(cfg) >= offset + 2 else 0


def _u32(cfg: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", cfg, offset)[0]) if len(cfg) >= offset + 4 else 0


def all_ones(cfg: bytes | None) -> bool:
    """True when the function does not answer: its vendor id reads 0xffff."""
    return cfg is not None and len(cfg) >= 2 and cfg[:2] == b"\xff\xff"


def pcie_capability(cfg: bytes) -> int | None:
    """Offset of the PCI Express capability, or None (conventional PCI)."""
    if len(cfg) < 0x40 or not _u16(cfg, _STATUS) & _STATUS_CAP_LIST:
        return None
    ptr = cfg[_CAP_POINTER] & 0xFC
    for _ in range(48):  # the kernel's PCI_FIND_CAP_TTL: a looping list ends here
        if ptr < 0x40 or ptr + 2 > len(cfg):
            return None
        if cfg[ptr] == _CAP_PCIE:
            return ptr
        ptr = cfg[ptr + 1] & 0xFC
    return None


def aer_uncorrectable_status(cfg: bytes) -> int | None:
    """The AER Uncorrectable Error Status register, or None when AER is absent."""
    offset = _EXT_CAP_START
    for _ in range((CONFIG_SIZE - _EXT_CAP_START) // 8):
        if offset < _EXT_CAP_START or offset + 8 > len(cfg):
            return None
        header = _u32(cfg, offset)
        if header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == _EXT_CAP_AER:
            return _u32(cfg, offset + 4)
        offset = (header >> 20) & 0xFFC
    return None


def parse_resources(text: str | None) -> list[tuple[int, int, int]]:
    """The ``resource`` file: (start, end, flags) per line, BARs 0-5 first."""
    out: list[tuple[int, int, int]] = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) != 3:
            break
        try:
            out.append((int(fields[0], 16), int(fields[1], 16), int(fields[2], 16)))
        except ValueError:
            break
    return out


@dataclass(frozen=True)
class Expected:
    """What a healthy function reads back after a reset."""

    vendor: int
    device: int
    #: The command register before the reset (COMMAND_MASK bits compared); None when
    #: not compared (the function was dead before, or a rescan enumerated it anew).
    command: int | None
    #: Uncorrectable AER bits already set before the reset (sticky: a reset keeps them).
    aer_before: int = 0


def _aer_names(bits: int) -> str:
    names = [name for bit, name in _AER_UNCORRECTABLE.items() if bits & (1 << bit)]
    return ", ".join(names) if names else "reserved bits"


def problems(cfg: bytes | None, expected: Expected,
             resources: list[tuple[int, int, int]]) -> list[str]:
    """What is wrong with a function whose config space reads *cfg*: empty when healthy.

    *resources* is what the kernel assigned (its ``resource`` file).
    """
    if cfg is None or len(cfg) < 0x40:
        return ["its config space cannot be read"]
    if all_ones(cfg):
        return ["config space reads all ones (vendor 0xffff): it does not answer"]
    found: list[str] = []
    if cfg[_HEADER_TYPE] & 0x7F == 0x7F:
        found.append("header type reads 0x7f")
    vendor, device = _u16(cfg, 0), _u16(cfg, 2)
    if (vendor, device) != (expected.vendor, expected.device):
        found.append(f"identity changed: reads {vendor:04x}:{device:04x}, "
                     f"was {expected.vendor:04x}:{expected.device:04x}")
    command = _u16(cfg, _COMMAND)
    if expected.command is not None and (command ^ expected.command) & COMMAND_MASK:
        found.append(f"command register not restored: reads 0x{command:04x}, "
                     f"was 0x{expected.command:04x}")
    if cfg[_HEADER_TYPE] & 0x7F == 0:
        found += _bar_problems(cfg, resources)
    found += _link_problems(cfg)
    status = aer_uncorrectable_status(cfg)
    if status is not None and status & ~expected.aer_before:
        new = status & ~expected.aer_before
        found.append(f"uncorrectable AER status 0x{new:08x} ({_aer_names(new)})")
    return found


def _bar_problems(cfg: bytes, resources: list[tuple[int, int, int]]) -> list[str]:
    """Each assigned BAR reads back the address the kernel gave it."""
    found: list[str] = []
    skip = False
    for index, (start, _end, flags) in enumerate(resources[:6]):
        if skip:
            skip = False
            continue
        raw = _u32(cfg, _BAR0 + 4 * index)
        if flags & IORESOURCE_IO:
            address = raw & ~0x3
        elif flags & IORESOURCE_MEM:
            address = raw & ~0xF
            if raw & 0x6 == 0x4 and index < 5:  # 64-bit: the next BAR is the high half
                address |= _u32(cfg, _BAR0 + 4 * (index + 1)) << 32
                skip = True
        else:
            continue
        if start and address != start:
            found.append(f"BAR{index} not restored: reads 0x{address:x}, "
                         f"the kernel assigned 0x{start:x}")
    return found


def _link_problems(cfg: bytes) -> list[str]:
    """The link up: the function's own Link Status shows a negotiated width.

    The Data Link Layer Link Active bit of the port above is not used: QEMU 7.2's root
    ports advertise reporting it and never set it, with the link working (seen in the
    real-kernel tier), and the kernel itself relies on it only for links above 5 GT/s.
    A function behind a link that is down reads all ones anyway.
    """
    cap = pcie_capability(cfg)
    if cap is None:
        return []
    port_type = (_u16(cfg, cap + 2) >> 4) & 0xF
    width = (_u16(cfg, cap + 0x12) >> 4) & 0x3F
    if port_type in _TYPES_WITH_UPSTREAM_LINK and width == 0:
        return ["PCIe link down (Link Status: negotiated width 0)"]
    return []


class Health:
    """Reads a function's health through the host."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def config(self, address: str) -> bytes | None:
        """The function's configuration space as the kernel reads it now."""
        return self.host.read_bytes(paths.device_file(address, "config"), CONFIG_SIZE)

    def expect(self, dev: PciDevice) -> Expected:
        """What the function must read back after a reset, taken before it: the ids the
        kernel enumerated (as *dev*, read just before, has them), the command register
        and the AER bits set now."""
        cfg = self.config(dev.address)
        alive = cfg is not None and len(cfg) >= 0x40 and not all_ones(cfg)
        command = _u16(cfg, _COMMAND) if alive and cfg else None
        aer = (aer_uncorrectable_status(cfg) or 0) if alive and cfg else 0
        return Expected(dev.vendor, dev.device, command, aer)

    def check(self, address: str, expected: Expected) -> list[str]:
        """What is wrong with the function now; empty when it is healthy."""
        resources = parse_resources(self.host.read_text(paths.device_file(address,
                                                                           "resource")))
        return problems(self.config(address), expected, resources)
