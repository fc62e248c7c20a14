"""The host interface shared by the real machine and the simulated kernel.

Both hosts are a directory tree shaped like ``/`` (the real one is ``/``), so reads are
implemented here once, over ``root``. What differs is abstract: how a control file is
written (the kernel, or the simulated kernel's model), how modules load, and where
uevents come from.

Paths given to a Host are host-absolute (``/sys/bus/pci/devices``); the host maps them
under its root. Paths a Host returns are host-absolute too.
"""

from __future__ import annotations

import abc
import errno
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vfiod.errors import HostWriteError, HostWriteTimeout
from vfiod.host import paths
from vfiod.host import paths as _paths  # holders() has a parameter called paths
from vfiod.host.closing import CloseWatch, wait_until_closed
from vfiod.host.holders import HolderEventSource
from vfiod.host.modules import ModuleIndex
from vfiod.printable import printable

#: Default time a control-file write may take (unbind can block while a guest runs).
DEFAULT_WRITE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Process:
    """A process that holds one of the host's device nodes open."""

    pid: int
    comm: str

    def __str__(self) -> str:
        return f"{self.comm} (pid {self.pid})"


@dataclass(frozen=True)
class UEvent:
    """One kernel uevent, as the real kernel's netlink or the simulated kernel send it."""

    action: str  # add, remove, bind, unbind, change, move
    devpath: str  # /devices/pci0000:00/0000:00:03.0/0000:06:00.0
    subsystem: str  # pci, vfio, vfio-dev, block, net, drm, ...
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def driver(self) -> str | None:
        """The DRIVER property (present on bind events only)."""
        return self.properties.get("DRIVER")

    @property
    def pci_address(self) -> str | None:
        """The PCI address the event is about, for PCI devices."""
        return self.properties.get("PCI_SLOT_NAME")


class PendingWrite:
    """A control-file write still in the kernel after its timeout ran out.

    The worker thread that made it stays blocked until the kernel returns; ``wait()``
    says when, and ``error`` then holds what it raised (None: it succeeded).
    """

    def __init__(self, path: str, value: str, device: str | None) -> None:
        self.path = path
        self.value = value
        self.device = device
        #: Wall-clock time (seconds since the epoch) the write began.
        self.since = time.time()
        self.error: BaseException | None = None
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        """True once the kernel has returned from the write."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the kernel returns (or *timeout*); True when it has."""
        return self._done.wait(timeout)

    def finish(self, error: BaseException | None) -> None:
        """The write returned, with *error* or None (called by the worker thread)."""
        self.error = error
        self._done.set()


class EventSource(abc.ABC):
    """A non-blocking stream of uevents with a file descriptor for an event loop."""

    @abc.abstractmethod
    def fileno(self) -> int:
        """A descriptor that becomes readable when events are waiting."""

    @abc.abstractmethod
    def receive(self) -> list[UEvent]:
        """Every event waiting now, oldest first; never blocks.

        Raises ``OSError(ENOBUFS)`` when events were lost: the caller must rescan.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving and release the descriptor."""


class Host(abc.ABC):
    """The machine as vfiod sees it: files under ``root``, module loading, uevents."""

    #: True for the simulated kernel.
    simulated: bool = False

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root).resolve()
        # Plain string prefix: path() runs for every file read, pathlib is slow there.
        self._prefix = "" if str(self.root) == "/" else str(self.root)
        # Where processes are listed when looking for holders: the host's /proc.
        self.proc_dir = Path(self.real_path(paths.PROC))
        self._modules: ModuleIndex | None = None

    # -- paths -------------------------------------------------------------------------
    def real_path(self, host_path: str) -> str:
        """The real filesystem path of a host-absolute path."""
        if not host_path.startswith("/"):
            raise ValueError(f"host paths are absolute: {host_path!r}")
        return self._prefix + host_path if host_path != "/" else str(self.root)

    def host_path(self, real: str | os.PathLike[str]) -> str | None:
        """The host-absolute path of a real path, or None when it is outside the root."""
        real = os.fspath(real)
        root = os.fspath(self.root)
        if root == "/":
            return real
        if real == root:
            return "/"
        if real.startswith(root + "/"):
            return real[len(root):]
        return None

    # -- reads ---------------------------------------------------------------------
    def read_text(self, path: str) -> str | None:
        """The contents of a file, stripped of its trailing newline; None when absent."""
        data = self._read(path, -1)
        if data is None:
            return None
        text = data.decode("utf-8", "replace")
        if "\r" in text:  # the newlines a text-mode open gave before (universal newlines)
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text.rstrip("\n")

    def read_bytes(self, path: str, size: int = -1) -> bytes | None:
        """Up to *size* bytes of a binary file (PCI config space); None when absent."""
        return self._read(path, size)

    def _read(self, path: str, size: int) -> bytes | None:
        """Up to *size* bytes (all with -1) of a file; None when absent or unreadable.

        Plain os.open/os.read: a scan reads a dozen attributes per function, and a
        Python file object (buffer, decoder, context) per read was half of a 4,096-
        function scan (issue 14's profile). Some sysfs attributes fail reads with
        EIO/ENODEV (a device going away): None too.
        """
        try:
            fd = os.open(self.real_path(path), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            chunks = []
            left = size
            while left != 0:
                chunk = os.read(fd, 65536 if left < 0 else min(left, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                if left > 0:
                    left -= len(chunk)
            return b"".join(chunks)
        except OSError:
            return None
        finally:
            os.close(fd)

    def read_int(self, path: str, base: int = 0) -> int | None:
        """A file holding one integer (``0x10de``, ``1``); None when absent or garbled."""
        text = self.read_text(path)
        if text is None:
            return None
        try:
            return int(text.strip(), base)
        except ValueError:
            return None

    def listdir(self, path: str) -> list[str]:
        """Sorted entries of a directory; empty when it does not exist."""
        try:
            return sorted(os.listdir(self.real_path(path)))
        except OSError:
            return []

    def readlink(self, path: str) -> str | None:
        """The target of a symbolic link as stored; None when it is no link."""
        try:
            return os.readlink(self.real_path(path))
        except OSError:
            return None

    def link_name(self, path: str) -> str | None:
        """The last element of a link's target (``driver`` -> ``vfio-pci``), or None."""
        target = self.readlink(path)
        return os.path.basename(target) if target else None

    def resolve(self, path: str) -> str | None:
        """The host-absolute canonical path (links followed); None when it is absent.

        One strict walk, no exists-check first: a device that goes away while the
        links are followed (a concurrent unbind removes /sys/class/drm/cardN) is gone,
        not an error.
        """
        try:
            return self.host_path(os.path.realpath(self.real_path(path), strict=True))
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        """True when the path exists (links followed)."""
        return os.path.exists(self.real_path(path))

    def boot_id(self) -> str | None:
        """The kernel's boot id (new at every boot), or None when it cannot be read."""
        text = self.read_text(paths.BOOT_ID)
        return text.strip() if text else None

    # -- drivers and modules ----------------------------------------------------------
    def driver_loadable(self, name: str) -> bool:
        """True when the PCI driver *name* is loaded, or a module of that name exists."""
        if self.exists(paths.driver_dir(name)):
            return True
        index = self._module_index()
        return index is not None and index.exists(name)

    def kernel_choice(self, modalias: str) -> str | None:
        """The driver the kernel binds a device with this modalias to, when one module
        (not VFIO's) claims it; None when none or several do, or the tree is unreadable.

        The name is the driver the loaded module registered (``xhci_hcd`` for
        ``xhci_pci``), else the module's own name.
        """
        if not modalias:
            return None
        index = self._module_index()
        if index is None:
            return None
        claimants = [m for m in index.claimants(modalias) if "vfio" not in m]
        if len(claimants) != 1:
            return None
        module = claimants[0]
        drivers = [e.split(":", 1)[1] for e in
                   self.listdir(paths.module_dir(module) + "/drivers") if e.startswith("pci:")]
        return drivers[0] if len(drivers) == 1 else module

    def _module_index(self) -> ModuleIndex | None:
        """The running kernel's module tree, read once; None when it cannot be read."""
        if self._modules is None:
            release = self.read_text(paths.OSRELEASE)
            alias = self.read_text(f"{paths.modules_dir(release)}/modules.alias") \
                if release else None
            if alias is None:
                return None
            base = paths.modules_dir(release or "")
            self._modules = ModuleIndex(alias, self.read_text(f"{base}/modules.dep") or "",
                                        self.read_text(f"{base}/modules.builtin") or "")
        return self._modules

    # -- block devices ----------------------------------------------------------------
    @abc.abstractmethod
    def exclusive_open_errno(self, node: str) -> int:
        """Open a block node as ``open(O_RDONLY|O_EXCL)`` does and close it again: 0 when
        nobody claims the device, else the errno (EBUSY: a mount in any namespace, swap,
        md, dm, btrfs or zfs holds it; ENOENT: no such node).

        This is the kernel's own answer to "does anything hold this disk", whatever
        mount namespace did it; /proc only helps to name the culprit.
        """

    def node_device_number(self, path: str) -> str | None:
        """``MAJ:MIN`` of the block device node at *path*; None when it is none."""
        try:
            st = os.stat(self.real_path(path))
        except (OSError, ValueError):
            return None
        if not stat.S_ISBLK(st.st_mode):
            return None
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"

    def file_device_number(self, path: str) -> str | None:
        """``MAJ:MIN`` of the filesystem a file lies on (its st_dev); None when it cannot
        be read. A loop device's backing file is mapped to its disk this way."""
        try:
            st = os.stat(self.real_path(path))
        except (OSError, ValueError):
            return None
        return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"

    # -- processes --------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every process id the host's /proc lists."""
        try:
            return [int(e) for e in os.listdir(self.proc_dir) if e.isdigit()]
        except OSError:
            return []

    def alive(self, pid: int) -> bool:
        """True while the host's /proc lists this process."""
        return os.path.exists(f"{self.proc_dir}/{pid}")

    def exit_status(self, pid: int) -> int | None:
        """The exit status (waitpid's form) of a process that exited and that its
        parent has not reaped yet (a zombie); None for a running or a reaped process.

        The kernel keeps it as field 52 (exit_code) of ``/proc/PID/stat`` and shows it
        to whoever may inspect the process (root; the same user).
        """
        try:
            with open(f"{self.proc_dir}/{pid}/stat", "rb") as f:
                data = f.read(4096)
        except OSError:
            return None
        # The comm (field 2) is in parentheses and may hold anything: split after it.
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) < 50 or fields[0] != b"Z":
            return None
        try:
            return int(fields[49])  # field 52; fields[0] is field 3 (the state)
        except ValueError:
            return None

    def process(self, pid: int) -> Process:
        """The process with this pid, named by its comm."""
        try:
            comm = (self.proc_dir / str(pid) / "comm").read_text(errors="replace").strip()
        except OSError:
            comm = "?"
        # Any process may name itself anything, escape sequences included.
        return Process(pid, printable(comm))

    def holders(self, paths: Iterable[str]) -> dict[str, list[Process]]:
        """Which processes hold each of these host paths open.

        Scans ``/proc/*/fd`` once for all paths. ``vfiod.host.paths.VFIO_DEVICE_FD``
        among them stands for every VFIO device fd (an anonymous inode, whichever
        device). Processes we may not inspect are skipped; the daemon runs as root, so
        on a real host that is none.
        """
        wanted: dict[str, str] = {}
        device_fds = False
        for p in paths:
            if p == _paths.VFIO_DEVICE_FD:
                device_fds = True
            else:
                wanted[canonical(self.real_path(p))] = p
        found: dict[str, list[Process]] = {}
        if not wanted and not device_fds:
            return found
        for pid in self.pids():
            for target in self._fd_targets(pid):
                host = wanted.get(target)
                if host is None and device_fds and self.is_vfio_device_fd(target):
                    host = _paths.VFIO_DEVICE_FD
                if host is not None:
                    lst = found.setdefault(host, [])
                    if not any(proc.pid == pid for proc in lst):
                        lst.append(self.process(pid))
        return found

    def wait_closed(self, nodes: Iterable[str], timeout: float) -> dict[str, list[Process]]:
        """Wait until no process holds any of these host paths open, at most *timeout*
        seconds; return who still holds them then (empty: all closed).

        Woken by the closes themselves (inotify on the nodes' folders) and by the
        holders' exits (pidfds), not by polling; /proc is scanned after each.
        """
        nodes = list(nodes)
        folders = [os.path.dirname(self.real_path(n)) for n in nodes]
        watch = CloseWatch(folders)  # first: a close after the first scan still wakes us
        found: dict[str, list[Process]] = {}

        def scan() -> dict[str, list[int]]:
            found.clear()
            found.update({n: procs for n, procs in self.holders(nodes).items() if procs})
            return {n: [p.pid for p in procs] for n, procs in found.items()}

        try:
            left = wait_until_closed(watch, scan, timeout)
        finally:
            watch.close()
        return {n: found[n] for n in left}

    def holders_under(self, prefix: str) -> dict[str, list[Process]]:
        """Open files below a host directory (``/dev/vfio``), by host path."""
        real_prefix = canonical(self.real_path(prefix)) + "/"
        found: dict[str, list[Process]] = {}
        for pid in self.pids():
            for target in self._fd_targets(pid):
                if target.startswith(real_prefix):
                    host = self.host_path(target) or target
                    lst = found.setdefault(host, [])
                    if not any(proc.pid == pid for proc in lst):
                        lst.append(self.process(pid))
        return found

    def _fd_targets(self, pid: int) -> Iterator[str]:
        # Plain strings, not pathlib: this runs for every fd of every process.
        fd_dir = f"{self.proc_dir}/{pid}/fd/"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return
        readlink = os.readlink
        for fd in fds:
            try:
                target = readlink(fd_dir + fd)
            except OSError:
                continue
            # Paths, and VFIO device fds (an anonymous inode on 6.1); not sockets or pipes.
            if target[0] == "/" or target == paths.VFIO_DEVICE_FD:
                yield target

    def is_vfio_device_fd(self, target: str) -> bool:
        """True when an fd's link target is a VFIO device fd (VFIO_GROUP_GET_DEVICE_FD).

        On the real kernel that is the anonymous inode ``anon_inode:[vfio-device]``,
        which does not say which device: only the kernel's EBUSY on the group says
        which group is held.
        """
        return target == paths.VFIO_DEVICE_FD

    # -- writes -----------------------------------------------------------------------
    def write_attr(self, path: str, value: str, *, timeout: float = DEFAULT_WRITE_TIMEOUT,
                   device: str | None = None) -> None:
        """Write *value* to a kernel control file, as one write(2).

        The write runs on a worker thread so that a write the kernel blocks (``unbind``
        while a guest holds the device) cannot hang the caller for longer than
        *timeout*: HostWriteTimeout is raised then, and the thread stays blocked in the
        kernel until it returns. An errno becomes HostWriteError naming the file,
        the value and *device*.

        The timeout's ``pending`` (a PendingWrite) says when the kernel returns and
        what the write gave then (already as HostWriteError).
        """
        pending = PendingWrite(path, value, device)

        def run() -> None:
            try:
                self._write(path, value)
                pending.finish(None)
            except OSError as exc:
                pending.finish(HostWriteError(path, value, exc.errno, device)
                               if exc.errno is not None else exc)
            except BaseException as exc:  # handed to the caller below
                pending.finish(exc)

        worker = threading.Thread(target=run, name=f"write {path}", daemon=True)
        worker.start()
        worker.join(timeout)
        if not pending.done:
            raise HostWriteTimeout(path, value, timeout, device, pending=pending)
        if pending.error is not None:
            raise pending.error

    @abc.abstractmethod
    def _write(self, path: str, value: str) -> None:
        """Perform one write; raise OSError with the kernel's errno on failure."""

    # -- VFIO group nodes ---------------------------------------------------------------
    def open_group(self, group: int) -> int:
        """Open ``/dev/vfio/N`` for vfiod itself and return the descriptor.

        The kernel lets one opener have a group at a time: OSError EBUSY means a
        holder, whether it holds the group node, a device fd it got through it (also
        after closing the group fd), or the device's iommufd cdev. Held open, the
        descriptor keeps any guest out until close_group().
        """
        return os.open(self.real_path(paths.group_node(group)), os.O_RDWR | os.O_CLOEXEC)

    def close_group(self, fd: int) -> None:
        """Close a descriptor open_group() returned."""
        os.close(fd)

    @abc.abstractmethod
    def vfio_hot_reset(self, address: str, group_fds: Mapping[int, int] | None = None
                       ) -> list[str]:
        """Reset the bus below *address*'s parent bridge through VFIO; return who was reset.

        The kernel refuses a per-function bus reset while other functions share the bus
        (a GPU and its HDMI audio); VFIO_DEVICE_PCI_HOT_RESET resets them all, given the
        group fds of every affected device. The caller checks first that the device and
        every function on its bus are on vfio-pci and that no process holds their groups.
        *group_fds* are groups vfiod holds open already (open_group(), by group number):
        they are used as they are, since a second open of a group fails EBUSY.
        Raises HostWriteError(path="/dev/vfio/N", value="hot reset") on an errno.
        """

    # -- modules and events -----------------------------------------------------------
    @abc.abstractmethod
    def load_module(self, name_or_modalias: str) -> None:
        """modprobe a module by name or modalias; raise ModuleLoadError on failure."""

    @abc.abstractmethod
    def module_loaded(self, name: str) -> bool:
        """True when the module (``vfio_pci`` or ``vfio-pci``) is loaded or built in."""

    @abc.abstractmethod
    def open_events(self) -> EventSource:
        """Start receiving uevents for PCI devices and everything below them."""

    def open_holder_events(self) -> HolderEventSource:
        """Start receiving holder events: /dev/vfio nodes opened and closed, holders exiting."""
        return HolderEventSource(self.real_path(paths.DEV), self.real_path(paths.VFIO_DIR))

    def close(self) -> None:
        """Release what the host holds (the simulated kernel's threads and children)."""


def canonical(real_path: str) -> str:
    """*real_path* with links followed as far as they exist (a non-strict realpath).

    os.path.realpath raises FileNotFoundError when a link it found is removed before
    it reads it; a path whose links vanish mid-walk is taken as it was spelt.
    """
    try:
        return os.path.realpath(real_path)
    except OSError:
        return os.path.abspath(real_path)


def write_once(real_path: str | os.PathLike[str], value: str) -> None:
    """One write(2) of *value* to an existing file, as sysfs expects (no O_CREAT)."""
    fd = os.open(real_path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        data = value.encode()
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.EIO, f"short write to {real_path}")
    finally:
        os.close(fd)
