"""The kernel's module tree: which modules exist, and which module claims a modalias.

Read from ``/lib/modules/<release>/`` (modules.alias, modules.dep, modules.builtin),
as modprobe reads it, so that vfiod can say what Unbind will bind without loading
anything.
"""

from __future__ import annotations

import fnmatch
import re


def module_name(name: str) -> str:
    """The kernel's spelling of a module name: ``vfio-pci`` -> ``vfio_pci``."""
    return name.replace("-", "_")


class ModuleIndex:
    """What one kernel release's module tree lists."""

    def __init__(self, alias: str, dep: str, builtin: str) -> None:
        self._aliases: list[tuple[re.Pattern[str], str]] = []
        for line in alias.splitlines():
            parts = line.split()
            # Only PCI aliases matter here; the file holds tens of thousands of others.
            if len(parts) == 3 and parts[0] == "alias" and parts[1].startswith("pci:"):
                self._aliases.append((re.compile(fnmatch.translate(parts[1])),
                                      module_name(parts[2])))
        self._claimants: dict[str, list[str]] = {}
        self._modules = set()
        for line in (dep + "\n" + builtin).splitlines():
            path = line.split(":", 1)[0].strip()
            if path:
                base = path.rsplit("/", 1)[-1]
                self._modules.add(module_name(base.split(".ko", 1)[0]))

    def exists(self, name: str) -> bool:
        """True when the tree has a module (or a built-in) of this name."""
        return module_name(name) in self._modules

    def claimants(self, modalias: str) -> list[str]:
        """The modules whose aliases match a device's modalias, in the file's order."""
        cached = self._claimants.get(modalias)
        if cached is not None:
            return list(cached)
        found: list[str] = []
        for pattern, module in self._aliases:
            if module not in found and pattern.match(modalias):
                found.append(module)
        self._claimants[modalias] = found  # devices of one model share a modalias
        return list(found)
