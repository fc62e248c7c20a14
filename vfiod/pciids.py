"""Human-readable PCI names from the system's pci.ids (as lspci shows them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PciIds:
    """A parsed pci.ids: vendors, devices, subsystems and class names."""

    vendors: dict[int, str] = field(default_factory=dict)
    devices: dict[tuple[int, int], str] = field(default_factory=dict)
    classes: dict[int, str] = field(default_factory=dict)  # 16-bit class -> subclass name

    @classmethod
    def parse(cls, text: str) -> "PciIds":
        """Parse the pci.ids format (tab-indented vendor/device/subsystem lines)."""
        ids = cls()
        vendor: int | None = None
        klass: int | None = None
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            if line[0] == "C" and line[1:2] == " ":
                # "C 03  Display controller"
                klass, vendor = int(line[2:4], 16), None
                ids.classes[klass << 8] = line[6:].strip()
                continue
            if line[0] != "\t":
                vendor, klass = int(line[:4], 16), None
                ids.vendors[vendor] = line[6:].strip()
                continue
            if line.startswith("\t\t"):
                continue  # subsystems: lspci's default output does not show them either
            code, _, name = line[1:].partition("  ")
            if vendor is not None:
                ids.devices[(vendor, int(code, 16))] = name.strip()
            elif klass is not None:
                ids.classes[(klass << 8) | int(code, 16)] = name.strip()
        return ids

    def name(self, vendor: int, device: int, class_code: int = 0) -> str:
        """``NVIDIA Corporation GP102 [GeForce GTX 1080 Ti]``, falling back to ids."""
        vendor_name = self.vendors.get(vendor)
        device_name = self.devices.get((vendor, device))
        if vendor_name and device_name:
            return f"{vendor_name} {device_name}"
        klass = self.classes.get(class_code >> 8, "Device")
        if vendor_name:
            return f"{vendor_name} {klass} [{vendor:04x}:{device:04x}]"
        return f"{klass} [{vendor:04x}:{device:04x}]"

    def class_name(self, class_code: int) -> str:
        """``VGA compatible controller`` for 0x030000."""
        return self.classes.get(class_code >> 8) or self.classes.get(class_code >> 16 << 8, "")
