"""The pci.ids a simulated machine carries: the entries its devices use, copied verbatim.

Names come from the machine's /usr/share/misc/pci.ids when it exists, else from the
copy shipped in vfiod/sim/data (made from Debian's pci.ids by ``python -m
vfiod.sim.pci_ids_subset``), so a simulated machine names its devices like lspci does.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from vfiod.sim.spec import DeviceSpec

SYSTEM_PCI_IDS = Path("/usr/share/misc/pci.ids")
#: Package data: importlib.resources finds it wherever the package is installed.
SHIPPED_PCI_IDS: Traversable = resources.files("vfiod.sim").joinpath("data", "pci.ids")


def source_path() -> Path | Traversable:
    """The pci.ids to copy from: the system's, else the shipped subset."""
    return SYSTEM_PCI_IDS if SYSTEM_PCI_IDS.is_file() else SHIPPED_PCI_IDS


def subset(source: str, devices: Iterable[DeviceSpec], origin: str = "pci.ids") -> str:
    """The lines of *source* (pci.ids text) that name *devices*, in pci.ids format.

    Keeps vendor lines (also of subsystem vendors), device lines, subsystem lines and
    the class, subclass and prog-if lines the devices use.
    """
    devs = list(devices)
    vendors = {d.vendor for d in devs} | {d.subsystem_vendor for d in devs}
    ids = {(d.vendor, d.device) for d in devs}
    subsystems = {(d.vendor, d.device, d.subsystem_vendor, d.subsystem_device) for d in devs}
    classes = {d.class_code >> 16 for d in devs}
    subclasses = {d.class_code >> 8 for d in devs}
    progifs = {d.class_code for d in devs}

    header = [f"# pci.ids entries of a simulated machine, copied from {origin}"]
    body: list[str] = []
    in_classes = False
    vendor = device = klass = subclass = -1
    for line in source.splitlines():
        if line.startswith("#"):
            if line.startswith(("#\tVersion:", "#\tDate:")):
                header.append(line)
            continue
        if not line.strip():
            continue
        if line.startswith("C "):
            in_classes = True
            klass = int(line[2:4], 16)
            if klass in classes:
                body.append(line)
        elif in_classes and line.startswith("\t\t"):
            if (subclass << 8 | int(line[2:4], 16)) in progifs:
                body.append(line)
        elif in_classes and line.startswith("\t"):
            subclass = klass << 8 | int(line[1:3], 16)
            if subclass in subclasses:
                body.append(line)
        elif in_classes:
            continue
        elif line.startswith("\t\t"):
            sub = tuple(int(x, 16) for x in line[2:11].split())
            if len(sub) == 2 and (vendor, device, *sub) in subsystems:
                body.append(line)
        elif line.startswith("\t"):
            device = int(line[1:5], 16)
            if (vendor, device) in ids:
                body.append(line)
        else:
            vendor = int(line[:4], 16)
            device = -1
            if vendor in vendors:
                body.append(line)
    return "\n".join([*header, "", *body, ""])


@functools.lru_cache(maxsize=8)
def load_subset(devices: tuple[DeviceSpec, ...]) -> str:
    """The subset for *devices*, read from the best pci.ids available (once per process:
    reading the 1.3 MB file is most of the time a small machine takes to build)."""
    path = source_path()
    return subset(path.read_bytes().decode("utf-8", errors="replace"), devices, str(path))


def main() -> int:
    """Regenerate the shipped copy from the system pci.ids (for every profile)."""
    from vfiod.sim.profiles import PROFILES

    devices = {d.address + p.name: d for p in PROFILES.values() for d in p.devices}
    text = subset(SYSTEM_PCI_IDS.read_text(encoding="utf-8", errors="replace"),
                  devices.values(), os.fspath(SYSTEM_PCI_IDS))
    target = Path(str(SHIPPED_PCI_IDS))  # regenerated in a checkout, where it is a file
    target.parent.mkdir(exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
