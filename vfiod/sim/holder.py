"""Holders: real processes that keep simulated device nodes open, like a guest or Xorg.

vfiod finds holders by scanning ``/proc/*/fd``, so a simulated "qemu-system-x86" must be
a real process with real open files. ``spawn_holder`` starts one
(``python -m vfiod.sim.holder``), names it through ``/proc/self/comm``, and returns once
every file is open. A holder exits when terminated or when its parent goes away.

``device_fds`` model VFIO device file descriptors: the holder opens
``/dev/vfio/devices/vfioN`` of each named PCI address (the iommufd cdev), or, on a
profile without VFIO device cdevs or for an address written ``@ADDRESS``, the device
fd VFIO_GROUP_GET_DEVICE_FD gives: a stand-in outside /dev that no /proc scan of /dev
paths finds, like the anonymous inode of a real device fd. Either makes the simulated
kernel block an ``unbind`` of that device until the holder lets go.

``release_on_remove`` makes a compositor that honours the kernel's ``remove`` uevent
(KWin does): the holder listens to the simulated kernel's uevents
(vfiod.sim.uevent_stream) and, when one says ``remove`` for a node it holds (a DRM card
whose ``uevent`` file got ``remove``), closes every file it holds and goes on running,
holding nothing. Without it the holder ignores uevents, as Xorg does for its card.

A group is exclusive, as on the real kernel: a second open of ``/dev/vfio/N`` fails
EBUSY while another process holds the group node, a device fd of one of its devices
(also after closing the group fd: ``paths=[]`` with ``device_fds``), or a device's
iommufd cdev. The simulated nodes are regular files, so the exclusivity is a flock on a
per-group lock file outside /dev (``GROUP_LOCK_DIR``, invisible to /proc scans of /dev
paths) that a holder keeps while it holds anything of the group, and that
``SimHost.open_group`` takes too.
"""

from __future__ import annotations

# The holder process imports this module too: only light modules at the top, so that
# a simulated guest starts in tens of milliseconds.
import errno
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from vfiod.sim.safefs import check_own_dir, open_own_file

if TYPE_CHECKING:
    import subprocess

READY_TIMEOUT = 15.0
PARENT_POLL = 0.2
#: Per-group lock files (under the simulated root) that model a group's exclusive open.
GROUP_LOCK_DIR = ".sim-vfio-group"


def lock_group(root: str, group: int) -> int:
    """Take group *group*'s exclusive open, as the kernel grants one opener a group.

    Returns the lock's descriptor (closing it lets go); OSError EBUSY when another
    opener has the group.
    """
    import fcntl

    directory = os.path.join(root, GROUP_LOCK_DIR)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    check_own_dir(directory)  # never a planted link to somewhere else
    fd = open_own_file(os.path.join(directory, str(group)), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), f"/dev/vfio/{group}") from None
    return fd


def _group_of_node(path: str) -> int | None:
    """The group a host path names when it is a group node (``/dev/vfio/31``)."""
    head, _, tail = path.rstrip("/").rpartition("/")
    return int(tail) if head == "/dev/vfio" and tail.isdigit() else None


def _group_of_device(root: str, address: str) -> int | None:
    link = os.path.join(root, "sys/bus/pci/devices", address, "iommu_group")
    try:
        name = os.path.basename(os.readlink(link))
    except OSError:
        return None
    return int(name) if name.isdigit() else None


class Holder:
    """A running holder process; ``close()`` (or leaving the ``with`` block) ends it."""

    def __init__(self, proc: subprocess.Popen[bytes], paths: Sequence[str]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.paths = tuple(paths)

    @property
    def running(self) -> bool:
        """True until the process has exited."""
        return self.proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """Terminate the process and wait for it (SIGKILL when it does not stop)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Holder(pid={self.pid}, paths={list(self.paths)})"


def spawn_holder(root: str | os.PathLike[str], paths: Sequence[str],
                 comm: str = "qemu-system-x86", device_fds: Sequence[str] = (),
                 release_on_remove: bool = False) -> Holder:
    """Start a process that holds *paths* (host paths under *root*) open.

    *release_on_remove*: it closes everything when a ``remove`` uevent names one of
    *paths* (its DEVNAME), as a compositor lets go of a card that is going.

    Raises OSError with the child's errno when a path cannot be opened (for a device
    fd: ENODEV when the device is not on vfio-pci).
    """
    import subprocess

    read_fd, write_fd = os.pipe()
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    # -S: the holder needs only the standard library and this package (on PYTHONPATH);
    # skipping site-packages halves its start-up.
    argv = [sys.executable, "-S", "-m", "vfiod.sim.holder", os.fspath(root), comm,
            str(write_fd), ",".join(device_fds), "release" if release_on_remove else "keep",
            *paths]
    try:
        proc = subprocess.Popen(argv, pass_fds=(write_fd,), env=env, stdin=subprocess.DEVNULL)
    finally:
        os.close(write_fd)
    try:
        answer = _read_answer(read_fd, READY_TIMEOUT)
    finally:
        os.close(read_fd)
    if answer == "ok":
        return Holder(proc, [*paths, *(f"device fd of {a.lstrip('@')}" for a in device_fds)])
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    code, _, message = answer.partition(" ")
    err = int(code) if code.isdigit() else errno.EIO
    raise OSError(err, f"holder could not start: {message or answer or 'no answer'}")


def _read_answer(fd: int, timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return ""
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            return data.decode(errors="replace").strip()
        data += chunk


def _device_node(root: str, address: str, via_group: bool = False) -> str:
    vfio_dev = os.path.join(root, "sys/bus/pci/devices", address, "vfio-dev")
    try:
        names = sorted(os.listdir(vfio_dev))
    except OSError:
        names = []
    if not names:
        raise OSError(errno.ENODEV, f"{address} is not on vfio-pci")
    # A kernel with device cdevs has /dev/vfio/devices; without, the simulation keeps
    # its stand-in outside /dev (vfiod.sim.render.PRIVATE_DEVICE_FD_DIR).
    for where in ((".sim-vfio-device",) if via_group else
                  ("dev/vfio/devices", ".sim-vfio-device")):
        node = os.path.join(root, where, names[0])
        if os.path.exists(node):
            return node
    raise OSError(errno.ENODEV, f"{address}: no node for its VFIO device fd")


def main(argv: Sequence[str] | None = None) -> int:
    """The holder process: open everything, say ready, then sleep until told to stop.

    Arguments: ROOT COMM READY_FD DEVICE_FD_ADDRESSES(comma-separated) ON_REMOVE PATH...
    with ON_REMOVE ``release`` (close everything at a ``remove`` uevent of a held node)
    or ``keep``.
    """
    root, comm, ready, device_fds, on_remove, *paths = sys.argv[1:] if argv is None else argv
    ready_fd = int(ready)
    parent = os.getppid()
    held: list[int] = []
    locks: dict[int, int] = {}  # group -> its exclusive open, kept while we hold any of it

    def claim(group: int | None) -> None:
        if group is not None and group not in locks:
            locks[group] = lock_group(root, group)

    listener = None
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(comm[:15])
        if on_remove == "release":
            from vfiod.sim.uevent_stream import UeventListener

            listener = UeventListener(root)  # before "ok": no event can be missed
        for path in paths:
            real = os.path.join(root, path.lstrip("/"))
            if os.path.exists(real):  # a missing node is ENOENT below, as on the kernel
                claim(_group_of_node(path))
            held.append(os.open(real, os.O_RDWR | os.O_CLOEXEC))
        for entry in filter(None, device_fds.split(",")):
            address = entry.lstrip("@")
            node = _device_node(root, address, via_group=entry.startswith("@"))
            claim(_group_of_device(root, address))
            held.append(os.open(node, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        os.write(ready_fd, f"{exc.errno or errno.EIO} {exc}".encode())
        return 1
    os.write(ready_fd, b"ok")
    os.close(ready_fd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Like a guest of a daemon that died: do not outlive whoever started us.
    while os.getppid() == parent:
        if listener is None:
            time.sleep(PARENT_POLL)
            continue
        for event in listener.receive(PARENT_POLL):
            if event.get("ACTION") == "remove" and event.get("DEVNAME") in paths:
                # The card is going: let go of it all, as KWin drops a removed GPU.
                for fd in held + list(locks.values()):
                    os.close(fd)
                held.clear()
                locks.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
