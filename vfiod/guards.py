"""In-use guards: what the host would lose if a device left its driver.

Hard guards are never overridden: any block device below the function that the kernel
says is claimed (a mount in any namespace, swap, md, dm, btrfs, zfs; see
vfiod.block_claims), or that could not be checked. Soft
guards yield to ``force``: a DRM or /dev/nvidia* node held open, the boot VGA with the
console on it, a network interface that is up, a sound card held open, a USB controller
with input devices attached. Every finding names its culprit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vfiod.block_claims import BlockFacts, block_findings, block_nodes
from vfiod.errors import InUse
from vfiod.host import paths
from vfiod.host.base import Host, Process
from vfiod.model import PciDevice


#: What force does about a soft usage, by Usage.kind: the refusal says it.
FORCE_HINTS = {
    "": "use force to override",
    "display": "use force to hand it over: vfiod asks the desktop to release the card "
               "and waits for it to close it, then binds",
}


@dataclass(frozen=True)
class Usage:
    """One reason a device is in use by the host."""

    address: str
    reason: str
    hard: bool
    #: "display" when processes hold the device's DRM nodes (a desktop): force then
    #: hands it over politely (vfiod.engine.handover).
    kind: str = ""

    def __str__(self) -> str:
        return f"{self.address}: {self.reason}"


class HostFacts:
    """Host-wide facts the guards need, read once per check (block facts when needed)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.blocks = BlockFacts(host)
        self.default_route = self._read_default_route()

    def _read_default_route(self) -> set[str]:
        ifaces = set()
        for line in (self.host.read_text(paths.ROUTES) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":
                ifaces.add(fields[0])
        for line in (self.host.read_text(paths.IPV6_ROUTES) or "").splitlines():
            fields = line.split()
            if len(fields) == 10 and fields[0] == "0" * 32 and fields[1] == "00" \
                    and fields[9] != "lo":
                ifaces.add(fields[9])
        return ifaces


def _held(holders: dict[str, list[Process]], paths: Iterable[str]) -> list[tuple[str, Process]]:
    return [(p, proc) for p in paths for proc in holders.get(p, ())]


def node_paths(host: Host, dev: PciDevice) -> dict[str, list[str]]:
    """The /dev nodes through which the host uses a device, by kind."""
    drm = [paths.drm_node(n) for n in dev.children.drm]
    if dev.children.nvidia_minor is not None:
        drm.append(paths.nvidia_node(dev.children.nvidia_minor))
    sound = []
    for card in dev.children.sound:
        num = card.removeprefix("card")
        sound += [paths.sound_node(n) for n in host.listdir(paths.SOUND_DIR)
                  if re.fullmatch(rf"(controlC{num}|pcmC{num}D\d+[pc]|hwC{num}D\d+)", n)]
    return {"drm": drm, "sound": sound, "block": block_nodes(host, dev.children.block)}


def find_usages(host: Host, devices: Iterable[PciDevice],
                holders: dict[str, list[Process]] | None = None, *,
                probe: bool = True) -> list[Usage]:
    """Every way the host uses these devices, hard ones first.

    *holders*: who holds which node open, when the caller scanned /proc already (a scan
    that covered these devices' nodes); else /proc is scanned here. *probe*: ask the
    kernel about each disk with an exclusive open (a guard before a detach); False
    describes the machine from its tables only (Status).
    """
    devices = list(devices)
    facts = HostFacts(host)
    nodes = {d.address: node_paths(host, d) for d in devices}
    if holders is None:
        holders = host.holders(p for n in nodes.values() for lst in n.values() for p in lst)
    hard: list[Usage] = []
    soft: list[Usage] = []
    console_on_fb = any(
        host.read_text(paths.vtconsole_file(vt, "bind")) == "1"
        and "frame buffer" in (host.read_text(paths.vtconsole_file(vt, "name")) or "")
        for vt in host.listdir(paths.VTCONSOLES))
    for dev in devices:
        a = dev.address
        for finding in block_findings(host, facts.blocks, dev.children.block, holders,
                                      probe=probe):
            (hard if finding.hard else soft).append(Usage(a, finding.reason, finding.hard))
        for path, proc in _held(holders, nodes[a]["drm"]):
            soft.append(Usage(a, f"{path} is held open by {proc}", False, "display"))
        if dev.boot_vga and console_on_fb:
            soft.append(Usage(a, "it is the boot VGA and the framebuffer console is on it",
                              False))
        for iface in dev.children.net:
            if host.read_text(paths.class_entry("net", iface, "operstate")) == "up":
                why = " and carries the default route" if iface in facts.default_route else ""
                soft.append(Usage(a, f"network interface {iface} is up{why}", False))
        for path, proc in _held(holders, nodes[a]["sound"]):
            soft.append(Usage(a, f"sound device {path} is held open by {proc}", False))
        if dev.children.input:
            names = [host.read_text(paths.class_entry("input", i, "name")) or i
                     for i in dev.children.input]
            soft.append(Usage(a, "input devices are attached: " + ", ".join(names), False))
    return hard + soft


def check_usages(host: Host, devices: Iterable[PciDevice], *, force: bool, action: str,
                 holders: dict[str, list[Process]] | None = None) -> None:
    """Raise InUse for the first usage that blocks *action* (hard always, soft unless force).

    *holders*: as for find_usages.
    """
    refusal = usage_refusal(find_usages(host, devices, holders), force=force, action=action)
    if refusal is not None:
        raise refusal


def usage_refusal(usages: list[Usage], *, force: bool, action: str) -> InUse | None:
    """The InUse that *usages* (find_usages' list) make of *action*, or None when none
    blocks it: the first hard one always, the first soft one unless *force*."""
    for usage in usages:
        if usage.hard:
            # Every hard reason of that function at once: a disk is often used several ways.
            reasons = "; ".join(u.reason for u in usages if u.hard and u.address == usage.address)
            return InUse(f"{usage.address}: refusing to {action}: {reasons}; "
                         "the host needs it (force does not override this)", hard=True)
        if not force:
            return InUse(f"{usage.address}: refusing to {action}: {usage.reason} "
                         f"({FORCE_HINTS.get(usage.kind, FORCE_HINTS[''])})")
    return None
