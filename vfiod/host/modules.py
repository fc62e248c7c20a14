"""The kernel's module tree: which modules exist, and which module claims a modalias.

Read from ``/lib/modules/<release>/`` (modules.alias, modules.dep, modules.builtin),
as modprobe reads it, so that vfiod can say what Unbind will bind without loading
anything.
"""

from __future__ import annotations

import fnmatch
import functools
import re


def module_name(name: str) -> str:
    """The kernel's spelling of a module name: ``vfio-pci`` -> ``vfio_pci``."""
    return name.replace("-", "_")


class ModuleIndex:
    """What one kernel release's module tree lists."""

    def __init__(self, alias: str, dep: str, builtin: str) -> None:
        # PCI aliases by their vendor and device fields ("v000010DE", "d00001B06"; ""
        # for a field with a wildcard): the file holds thousands, and only a device's
        # own, its vendor's generic and the class-wide ones can match it. Patterns are
        # compiled when first needed.
        self._aliases: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._order: dict[tuple[str, str], int] = {}  # the file's order, for claimants()
        for line in alias.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias" and parts[1].startswith("pci:"):
                key = (_literal(parts[1][4:13]), _literal(parts[1][13:22]))
                entry = (parts[1], module_name(parts[2]))
                self._order.setdefault(entry, len(self._order))
                self._aliases.setdefault(key, []).append(entry)
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
        vendor, device = modalias[4:13], modalias[13:22]
        candidates = [entry for key in ((vendor, device), (vendor, ""), ("", device), ("", ""))
                      for entry in self._aliases.get(key, [])]
        for pattern, module in sorted(candidates, key=self._order.__getitem__):
            if module not in found and _compiled(pattern).match(modalias):
                found.append(module)
        self._claimants[modalias] = found  # devices of one model share a modalias
        return list(found)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    """A modules.alias pattern as a regular expression (case matters, as for modprobe)."""
    return re.compile(fnmatch.translate(pattern))


def _literal(field: str) -> str:
    """A 9-character alias field (``v000010DE``) when it has no wildcard, else ""."""
    return field if len(field) == 9 and not set(field) & set("*?[") else ""
