"""Who holds the block devices below a PCI function: the kernel's answer, then its name.

For every disk below a function, its partitions and everything stacked on them (dm, md,
bcache through ``holders``; loop devices whose backing file lies on one of them), an
``open(O_EXCL)`` asks the kernel whether anything claims the device. EBUSY is a hard
refusal whatever claims it: a mount in any mount namespace, swap, md, dm, btrfs, zfs.
Only then is /proc read, to name the culprit: every mount namespace's mountinfo and
/proc/swaps, mapped to devices by number (through /sys/dev/block), never by the name a
mount table prints (``/dev/root``, a ZFS dataset, a btrfs member other than the one
named). A process that holds a device open without claiming it (dd, a VM's raw disk) is
a soft finding. What cannot be read is said, and refuses: nothing unread counts as free.

The whole disk must be opened as well as each partition: the kernel lets one open the
disk exclusively while another claims only a partition (block/bdev.c bd_may_claim).
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from vfiod.host import paths
from vfiod.host.base import Host, Process

#: Stacked devices named in /sys/block/X/dm/name.
_DM_NAME = "dm/name"
#: A loop device's backing file.
_LOOP_BACKING = "loop/backing_file"


@dataclass(frozen=True)
class Finding:
    """One block device below a function that the host uses."""

    reason: str
    hard: bool


@dataclass(frozen=True)
class Mount:
    """One line of a mountinfo file."""

    number: str  # field 3, MAJ:MIN of the filesystem (0:N for btrfs, zfs, tmpfs...)
    target: str
    fstype: str
    source: str


@dataclass
class Namespace:
    """A mount namespace, seen through the first process found in it."""

    pid: int | str  # "self" for the reader's own
    comm: str
    own: bool
    mounts: list[Mount] | None = None  # None: its mountinfo could not be read

    @property
    def mountinfo(self) -> str:
        """The file its mounts were read from."""
        return paths.process_file(self.pid, "mountinfo")

    def where(self) -> str:
        """`` in the mount namespace of unshare (pid 1234)``, or nothing for our own."""
        return "" if self.own else f" in the mount namespace of {self.comm} (pid {self.pid})"


def _unescape(text: str) -> str:
    # mountinfo and swaps escape space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a /proc/PID/mountinfo text (proc(5): fields, ``-``, type, source)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 3:
            continue
        out.append(Mount(fields[2], _unescape(fields[4]), fields[sep + 1],
                         _unescape(fields[sep + 2])))
    return out


@dataclass
class BlockFacts:
    """Host-wide facts for naming claims, each read once and only when first needed."""

    host: Host
    #: What could not be read, said in a refusal that depends on it.
    unreadable: list[str] = field(default_factory=list)

    # -- numbers and names ------------------------------------------------------------
    def name_of_number(self, number: str) -> str | None:
        """``8:17`` -> ``sdb1`` through /sys/dev/block; None for no block device (0:N)."""
        real = self.host.resolve(paths.block_by_number(number))
        return posixpath.basename(real) if real else None

    def number_of(self, name: str) -> str | None:
        """``sdb1`` -> ``8:17``."""
        return self.host.read_text(paths.class_entry("block", name, "dev"))

    def describe(self, name: str) -> str:
        """``/dev/dm-1 (vg-home)`` for a named dm device, else its node."""
        dm = self.host.read_text(paths.class_entry("block", name, _DM_NAME))
        return f"{paths.block_node(name)} ({dm})" if dm else paths.block_node(name)

    def device_of_mount(self, mount: Mount) -> set[str]:
        """The block devices a mount stands on: by its number; for a filesystem on an
        anonymous number (btrfs, zfs) by its source node's number, and every member of
        a btrfs filesystem that has that device."""
        name = self.name_of_number(mount.number)
        if name is not None:
            return {name}
        if not paths.is_device_node(mount.source):
            return set()
        number = self.host.node_device_number(mount.source)
        name = self.name_of_number(number) if number else None
        if name is None:
            return set()
        return self.btrfs_members.get(name, {name})

    @cached_property
    def btrfs_members(self) -> dict[str, set[str]]:
        """Each btrfs member device -> every member of its filesystem."""
        out: dict[str, set[str]] = {}
        for uuid in self.host.listdir(paths.BTRFS_FS):
            members = set(self.host.listdir(paths.btrfs_devices(uuid)))
            for m in members:
                out[m] = members
        return out

    # -- mount namespaces and swap -------------------------------------------------------
    @cached_property
    def namespaces(self) -> list[Namespace]:
        """Every mount namespace (one per distinct /proc/PID/ns/mnt), ours first."""
        host = self.host
        own_id = host.readlink(paths.process_file("self", "ns/mnt"))
        found: dict[str, Namespace] = {}
        if own_id is None:
            self.unreadable.append(paths.process_file("self", "ns/mnt"))
        else:
            found[own_id] = Namespace("self", "vfiod", True)
        pids = sorted(int(e) for e in host.listdir(paths.PROC) if e.isdigit())
        if not pids:
            self.unreadable.append(f"{paths.PROC} (no processes listed)")
        for pid in pids:
            ns_id = host.readlink(paths.process_file(pid, "ns/mnt"))
            if ns_id is None or ns_id in found:
                continue  # gone meanwhile, a kernel thread, or a namespace already seen
            comm = host.read_text(paths.process_file(pid, "comm")) or "?"
            found[ns_id] = Namespace(pid, comm, False)
        for ns in found.values():
            text = host.read_text(ns.mountinfo)
            if text is None:
                who = "vfiod's own" if ns.own else f"{ns.comm} (pid {ns.pid})'s"
                self.unreadable.append(f"{ns.mountinfo} ({who} mount namespace)")
            else:
                ns.mounts = parse_mountinfo(text)
        return list(found.values())

    @cached_property
    def mounts_by_device(self) -> dict[str, list[tuple[Mount, Namespace]]]:
        """Block device name -> every mount standing on it, in any namespace."""
        out: dict[str, list[tuple[Mount, Namespace]]] = {}
        seen: set[tuple[str, str]] = set()
        for ns in self.namespaces:  # ours first
            for mount in ns.mounts or ():
                # A namespace copied from ours (PrivateMounts, unshare) repeats our
                # mounts: name each once, where we see it.
                if (mount.number, mount.target) in seen:
                    continue
                seen.add((mount.number, mount.target))
                for name in self.device_of_mount(mount):
                    out.setdefault(name, []).append((mount, ns))
        return out

    @cached_property
    def swap_devices(self) -> dict[str, str]:
        """Block device name -> the swap area on it (a partition, or a swap file on it)."""
        text = self.host.read_text(paths.SWAPS)
        if text is None:
            self.unreadable.append(paths.SWAPS)
            return {}
        out: dict[str, str] = {}
        for line in text.splitlines()[1:]:
            fields = line.split()
            if not fields:
                continue
            area = _unescape(fields[0])
            kind = fields[1] if len(fields) > 1 else "partition"
            number = (self.host.node_device_number(area) if kind == "partition"
                      else self.host.file_device_number(area))
            name = self.name_of_number(number) if number else None
            if name is not None:
                out[name] = area if kind == "partition" else f"swap file {area}"
        return out

    def file_device(self, path: str) -> str | None:
        """The block device a file lies on, by the st_dev of its filesystem."""
        number = self.host.file_device_number(path)
        if number is None:
            return None
        name = self.name_of_number(number)
        if name is not None:
            return name
        # An anonymous number (btrfs): the mount that has it says which device.
        for ns in self.namespaces:
            if ns.own:
                for mount in ns.mounts or ():
                    if mount.number == number:
                        devices = self.device_of_mount(mount)
                        return min(devices) if devices else None
        return None


def devices_below(host: Host, facts: BlockFacts, base: Iterable[str]) -> dict[str, str]:
    """The block devices below a function: its disks and partitions and everything
    stacked on them, each with how it came to be there (``on /dev/sdb1``)."""
    found: dict[str, str] = {name: "" for name in base}
    loops: dict[str, tuple[str, str | None]] | None = None
    todo = list(found)
    while todo:
        name = todo.pop()
        for user in host.listdir(paths.class_entry("block", name, "holders")):
            if user not in found:
                found[user] = f"on {facts.describe(name)}"
                todo.append(user)
        if loops is None:
            loops = {}
            for loop, backing in _loop_backing(host).items():
                device = facts.file_device(backing)
                if device is None:
                    facts.unreadable.append(f"the filesystem of {loop}'s backing file {backing}")
                loops[loop] = (backing, device)
        for loop, (backing, device) in loops.items():
            if loop not in found and device == name:
                found[loop] = f"backed by {backing} on {facts.describe(name)}"
                todo.append(loop)
    return found


def _loop_backing(host: Host) -> dict[str, str]:
    """Every loop device in use -> its backing file."""
    out = {}
    for name in host.listdir(paths.class_dir("block")):
        if name.startswith("loop"):
            backing = host.read_text(paths.class_entry("block", name, _LOOP_BACKING))
            if backing:
                out[name] = backing.removesuffix(" (deleted)")
    return out


def block_nodes(host: Host, base: Iterable[str]) -> list[str]:
    """The /dev nodes of every block device below a function (for the /proc fd scan)."""
    facts = BlockFacts(host)
    return [paths.block_node(n) for n in devices_below(host, facts, base)]


def block_findings(host: Host, facts: BlockFacts, base: Iterable[str],
                   holders: dict[str, list[Process]], *, probe: bool = True) -> list[Finding]:
    """How the host uses the block devices below a function, hard ones first.

    *base*: the function's own disks and partitions. *holders*: who holds which /dev
    node open (a /proc scan that covered :func:`block_nodes`). *probe*: ask the kernel
    with an exclusive open (before a detach); without it (what Status shows) only the
    mount, swap, holder and btrfs tables are read, so that describing the machine never
    claims a disk, not even for a moment.
    """
    hard: list[tuple[tuple[int, int], Finding]] = []
    soft: list[Finding] = []
    for name, via in devices_below(host, facts, base).items():
        node = paths.block_node(name)
        err = host.exclusive_open_errno(node) if probe else _claimed_in_tables(host, facts,
                                                                               name)
        shown = facts.describe(name) + (f" ({via})" if via else "")
        if err == errno.EBUSY:
            rank, reason = _claim(host, facts, name, shown, holders.get(node, []))
            hard.append((rank, Finding(reason, True)))
        elif err not in (0, errno.ENOENT):
            hard.append(((2, 0), Finding(f"could not check whether the kernel holds {shown}: "
                                         f"open(O_EXCL) failed: {os.strerror(err)}", True)))
        else:
            for proc in holders.get(node, ()):
                soft.append(Finding(f"{shown} is held open by {proc}", False))
    # A mount (the one nearest the root first: the root filesystem) or swap says most.
    return [f for _, f in sorted(hard, key=lambda r: r[0])] + soft


def _claimed_in_tables(host: Host, facts: BlockFacts, name: str) -> int:
    """EBUSY when the tables show a claim on the device (a mount in any namespace, swap,
    an md/dm holder, a btrfs membership), else 0: the exclusive open's answer, read."""
    claimed = (name in facts.mounts_by_device or name in facts.swap_devices
               or name in facts.btrfs_members
               or bool(host.listdir(paths.class_entry("block", name, "holders"))))
    return errno.EBUSY if claimed else 0


def _claim(host: Host, facts: BlockFacts, name: str, shown: str,
           openers: list[Process]) -> tuple[tuple[int, int], str]:
    """Name what claims a device the kernel called busy, with its rank (a mount first,
    by the depth of its mount point; then swap; then the rest)."""
    mounts = facts.mounts_by_device.get(name, [])
    if mounts:
        where = "; ".join(f"{m.target} ({m.fstype}){ns.where()}" for m, ns in mounts[:3])
        more = f" and {len(mounts) - 3} more" if len(mounts) > 3 else ""
        depth = min(len(m.target.rstrip("/").split("/")) for m, _ in mounts)
        return (0, depth), f"{shown} is mounted on {where}{more}"
    swap = facts.swap_devices.get(name)
    if swap is not None:
        return (1, 0), f"{shown} is active swap" + ("" if swap == paths.block_node(name)
                                               else f" ({swap})")
    users = host.listdir(paths.class_entry("block", name, "holders"))
    if users:
        return (2, 0), (f"{shown} is part of an active md/LVM/dm device "
                   f"({', '.join(facts.describe(u) for u in users)})")
    if name in facts.btrfs_members:
        return (2, 0), f"{shown} is a member of a btrfs filesystem"
    if openers:
        return (2, 0), f"{shown} is held exclusively by {', '.join(map(str, openers))}"
    why = "the kernel says it is claimed (a mount, swap, md, dm, btrfs or zfs)"
    if facts.unreadable:
        return (2, 0), f"{shown}: {why}, and vfiod could not read {', '.join(facts.unreadable)}"
    return (2, 0), f"{shown}: {why}, by nothing vfiod can name"
