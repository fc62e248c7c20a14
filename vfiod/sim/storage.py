"""The simulated kernel's block layer: mount namespaces, swap, stacked devices, claims.

What a real kernel knows and vfiod must find out: which block device each mount in each
mount namespace stands on, which are swap, what dm/md/loop devices are stacked on what,
which devices btrfs filesystems span. From that the model answers ``open(O_EXCL)``
(EBUSY for a claimed device, block/bdev.c: a mount, swap, or a dm/md slave; a loop
device does not claim what its backing file lies on, the filesystem's mount does) and
renders what /proc and /sys show: /proc/PID/{comm,ns/mnt,mountinfo} of one process per
namespace, /proc/self, /proc/mounts and /proc/swaps of the first namespace,
/sys/dev/block, /sys/block/X/{holders,slaves}, dm/name, loop/backing_file,
/sys/fs/btrfs/UUID/devices.

Tests change it through SimHost.storage; each change is rendered at once. It is not
saved with the machine's state: a SimHost re-attached to a tree starts from the profile's
mounts and swap again.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from vfiod.sim.spec import Profile
from vfiod.sim.tree import DIR, Node, dev, link, relative_link, text

#: The first mount namespace's inode number (the kernel's init_mnt_ns on 6.1).
INIT_NS = 4026531841
#: Majors the kernel gives these (devices.txt; dm and md take what is free, as here).
LOOP_MAJOR = 7
MD_MAJOR = 9
DM_MAJOR = 253


@dataclass
class SimMount:
    """A mount: the block device it stands on ("" for none), and how mountinfo shows it."""

    device: str
    number: str  # field 3: the device's MAJ:MIN, or 0:N (btrfs, tmpfs, proc...)
    target: str
    fstype: str
    source: str


@dataclass
class SimNamespace:
    """A mount namespace and the process through which /proc shows it."""

    inode: int
    pid: int
    comm: str
    mounts: list[SimMount] = field(default_factory=list)
    readable: bool = True  # False: /proc/PID/mountinfo cannot be read


@dataclass
class Stacked:
    """A dm, md or loop device."""

    name: str  # dm-0, md0, loop0
    number: str
    slaves: tuple[str, ...] = ()
    dm_name: str | None = None
    backing_file: str | None = None


def _mount_line_fields(line: str) -> tuple[str, str, str]:
    source, target, fstype = line.split()[:3]
    return source, target, fstype


class Storage:
    """The block layer's state; *physical* maps a disk or partition name to (MAJ:MIN,
    its sysfs folder) for those that exist now."""

    def __init__(self, profile: Profile, physical: Callable[[], dict[str, tuple[str, str]]],
                 changed: Callable[[Callable[[], None]], None]) -> None:
        self._physical = physical
        self._changed = changed
        self._anon = 20  # the next anonymous device number (0:N)
        init = SimNamespace(INIT_NS, 1, "systemd")
        self.namespaces: list[SimNamespace] = [init]
        disks = {n: num for n, (num, _) in physical().items()}
        for line in profile.mounts:
            source, target, fstype = _mount_line_fields(line)
            name = source.removeprefix("/dev/") if source.startswith("/dev/") else ""
            number = disks.get(name) or self._next_anon()
            init.mounts.append(SimMount(name if name in disks else "", number, target,
                                        fstype, source))
        self.swaps: list[str] = [s.removeprefix("/dev/") for s in profile.swaps]
        self.stacked: dict[str, Stacked] = {}
        self.btrfs: dict[str, tuple[str, ...]] = {}
        #: Errno an exclusive open of a device fails with, whatever claims it (EIO...).
        self.open_errors: dict[str, int] = {}
        self._next_pid = 4000

    def _next_anon(self) -> str:
        self._anon += 1
        return f"0:{self._anon}"

    # -- what tests do ------------------------------------------------------------------
    def new_namespace(self, comm: str = "unshare", *, readable: bool = True) -> int:
        """A new mount namespace (``unshare -m``) and its process; returns its pid."""
        def do() -> None:
            self._next_pid += 1
            self.namespaces.append(SimNamespace(INIT_NS + len(self.namespaces) * 2,
                                                self._next_pid, comm, readable=readable))
        self._changed(do)
        return self._next_pid

    def mount(self, device: str, target: str, fstype: str = "ext4", *,
              pid: int = 1, source: str | None = None) -> None:
        """Mount *device* (``sdb1``, ``dm-1``) on *target* in the namespace of *pid*;
        *source* is what the mount table prints (``/dev/root``)."""
        def do() -> None:
            self._namespace(pid).mounts.append(SimMount(
                device, self.number(device), target, fstype, source or f"/dev/{device}"))
        self._changed(do)

    def unmount(self, target: str, *, pid: int = 1) -> None:
        """Unmount what is mounted on *target* in the namespace of *pid*."""
        def do() -> None:
            ns = self._namespace(pid)
            ns.mounts = [m for m in ns.mounts if m.target != target]
        self._changed(do)

    def swapon(self, device: str) -> None:
        """Make a device active swap."""
        self._changed(lambda: self.swaps.append(device))

    def dm_create(self, dm_name: str, *slaves: str) -> str:
        """A dm device (dmsetup create, cryptsetup open, an LVM volume) over *slaves*."""
        index = sum(1 for n in self.stacked if n.startswith("dm-"))
        name = f"dm-{index}"
        self._changed(lambda: self.stacked.__setitem__(
            name, Stacked(name, f"{DM_MAJOR}:{index}", slaves, dm_name=dm_name)))
        return name

    def md_create(self, *slaves: str) -> str:
        """An md array over *slaves*."""
        index = sum(1 for n in self.stacked if n.startswith("md"))
        name = f"md{index}"
        self._changed(lambda: self.stacked.__setitem__(
            name, Stacked(name, f"{MD_MAJOR}:{index}", slaves)))
        return name

    def losetup(self, backing_file: str) -> str:
        """A loop device backed by a file (a path in the first namespace)."""
        index = sum(1 for n in self.stacked if n.startswith("loop"))
        name = f"loop{index}"
        self._changed(lambda: self.stacked.__setitem__(
            name, Stacked(name, f"{LOOP_MAJOR}:{index}", backing_file=backing_file)))
        return name

    def mkfs_btrfs_and_mount(self, members: tuple[str, ...], target: str, *,
                             pid: int = 1) -> str:
        """A btrfs filesystem over *members*, mounted (as ``/dev/<first>``) on *target*."""
        uuid = f"5e1f0c1a-0000-4000-8000-{len(self.btrfs):012d}"

        def do() -> None:
            self.btrfs[uuid] = members
            self._namespace(pid).mounts.append(SimMount(
                members[0], self._next_anon(), target, "btrfs", f"/dev/{members[0]}"))
        self._changed(do)
        return uuid

    # -- what the kernel answers ------------------------------------------------------------
    def number(self, name: str) -> str:
        """A block device's MAJ:MIN."""
        if name in self.stacked:
            return self.stacked[name].number
        return self._physical()[name][0]

    def exists(self, name: str) -> bool:
        """True for a block device that exists now."""
        return name in self.stacked or name in self._physical()

    def exclusive_open_errno(self, name: str) -> int:
        """What ``open(O_RDONLY|O_EXCL)`` of the device's node returns."""
        if not self.exists(name):
            return errno.ENOENT
        if name in self.open_errors:
            return self.open_errors[name]
        return errno.EBUSY if self.claimed(name) else 0

    def claimed(self, name: str) -> bool:
        """True when a mount (any namespace), swap, a btrfs mount or a dm/md device holds it."""
        mounted = {m.device for ns in self.namespaces for m in ns.mounts}
        for uuid, members in self.btrfs.items():
            if mounted & set(members):
                mounted |= set(members)
        return (name in mounted or name in self.swaps
                or any(name in s.slaves for s in self.stacked.values()))

    def file_device_number(self, path: str) -> str | None:
        """st_dev of a file at *path* in the first namespace: its deepest mount's number."""
        best: SimMount | None = None
        for m in self.namespaces[0].mounts:
            inside = path == m.target or path.startswith(m.target.rstrip("/") + "/")
            if inside and (best is None or len(m.target) >= len(best.target)):
                best = m
        return best.number if best else None

    # -- the tree --------------------------------------------------------------------------
    def nodes(self) -> dict[str, Node]:
        """Everything the block layer shows in /proc, /sys and /dev."""
        physical = self._physical()
        nodes: dict[str, Node] = {"/sys/devices/virtual/block": DIR, "/dev/mapper": DIR,
                                  "/sys/fs": DIR, "/sys/fs/btrfs": DIR}
        init = self.namespaces[0]
        nodes["/proc/mounts"] = text("".join(
            f"{m.source} {m.target} {m.fstype} rw,relatime 0 0\n" for m in init.mounts))
        nodes["/proc/swaps"] = text(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" + "".join(
                f"{'/dev/' + s:<40}partition\t16777212\t0\t\t-2\n" for s in self.swaps))
        nodes["/proc/self"] = link(str(init.pid))
        for ns in self.namespaces:
            d = f"/proc/{ns.pid}"
            nodes.update({d: DIR, f"{d}/comm": text(ns.comm + "\n"), f"{d}/ns": DIR,
                          f"{d}/ns/mnt": link(f"mnt:[{ns.inode}]")})
            if ns.readable:
                nodes[f"{d}/mountinfo"] = text("".join(
                    f"{20 + i} 1 {m.number} / {m.target} rw,relatime - {m.fstype} "
                    f"{m.source} rw\n" for i, m in enumerate(ns.mounts)))
        sysdirs = {n: d for n, (_, d) in physical.items()}
        for name, (number, d) in physical.items():
            nodes[f"/sys/dev/block/{number}"] = link(relative_link(d, f"/sys/dev/block/{number}"))
        for s in self.stacked.values():
            d = f"/sys/devices/virtual/block/{s.name}"
            sysdirs[s.name] = d
            nodes.update({d: DIR, f"{d}/dev": text(s.number + "\n"), f"{d}/holders": DIR,
                          f"{d}/slaves": DIR, f"{d}/size": text("2097152\n")})
            for path in (f"/sys/block/{s.name}", f"/sys/class/block/{s.name}",
                         f"/sys/dev/block/{s.number}"):
                nodes[path] = link(relative_link(d, path))
            nodes[f"/dev/{s.name}"] = dev()
            if s.dm_name is not None:
                nodes[f"{d}/dm"] = DIR
                nodes[f"{d}/dm/name"] = text(s.dm_name + "\n")
                nodes[f"/dev/mapper/{s.dm_name}"] = link(f"../{s.name}")
            if s.backing_file is not None:
                nodes[f"{d}/loop"] = DIR
                nodes[f"{d}/loop/backing_file"] = text(s.backing_file + "\n")
        for s in self.stacked.values():
            d = sysdirs[s.name]
            for slave in s.slaves:
                if slave in sysdirs:
                    nodes[f"{d}/slaves/{slave}"] = link(
                        relative_link(sysdirs[slave], f"{d}/slaves/{slave}"))
                    nodes[f"{sysdirs[slave]}/holders/{s.name}"] = link(
                        relative_link(d, f"{sysdirs[slave]}/holders/{s.name}"))
        for uuid, members in self.btrfs.items():
            d = f"/sys/fs/btrfs/{uuid}"
            nodes[d] = DIR
            nodes[f"{d}/devices"] = DIR
            for m in members:
                if m in sysdirs:
                    nodes[f"{d}/devices/{m}"] = link(
                        relative_link(sysdirs[m], f"{d}/devices/{m}"))
        return nodes

    # -- internals ---------------------------------------------------------------------
    def _namespace(self, pid: int) -> SimNamespace:
        for ns in self.namespaces:
            if ns.pid == pid:
                return ns
        raise KeyError(f"no simulated mount namespace has pid {pid}")


def node_name(resolved_node: str) -> str:
    """The kernel's name of a block device from its resolved /dev path."""
    return posixpath.relpath(resolved_node, "/dev").replace("/", "!")
