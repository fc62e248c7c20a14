"""SimHost: the Host interface over a simulated machine (see vfiod.sim)."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from vfiod.errors import HostWriteError
from vfiod.host.base import Host, canonical
from vfiod.sim.events import EventHub, SimEventSource
from vfiod.sim.uevent_stream import EXTERNAL_DIR
from vfiod.sim.faults import Faults, SimulatedCrash
from vfiod.sim.holder import GROUP_LOCK_DIR, Holder, lock_group, spawn_holder
from vfiod.sim.kernel import Kernel
from vfiod.sim.pci_ids_subset import load_subset
from vfiod.sim.profiles import PROFILES
from vfiod.sim.safefs import check_own_dir, open_own_file
from vfiod.sim.render import PRIVATE_DEVICE_FD_DIR
from vfiod.sim.spec import Profile
from vfiod.sim.storage import Storage, node_name
from vfiod.sim.machine_state import STATE_FILE, load
from vfiod.sim.watcher import ExternalWriteWatcher

LOCK_FILE = ".sim-lock"
TEMP_ROOT_PREFIX = "vfiod-sim-"
#: A temporary machine this old whose lock nobody holds was left by a killed process.
ORPHAN_AGE = 60.0


def scratch_dir() -> str | None:
    """Where temporary machines go: tmpfs when there is one (building a tree on a busy
    disk is ten times slower), unless TMPDIR says otherwise."""
    if "TMPDIR" not in os.environ and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def sweep_orphans(directory: str) -> None:
    """Remove temporary machines whose SimHost was killed before it could close.

    A live SimHost holds its root's lock; a process killed with SIGKILL releases it,
    which is how its leftovers (in tmpfs: memory) are told apart. Only this user's own
    machines go: a real directory owned by this uid whose lock, when it has one, is a
    regular file of this uid too (another user's directory, or a planted symbolic link,
    is never removed or followed).
    """
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TEMP_ROOT_PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(directory, name)
        try:
            st = check_own_dir(path)
            if time.time() - st.st_mtime < ORPHAN_AGE:
                continue  # maybe still being set up
            fd = open_own_file(os.path.join(path, LOCK_FILE), os.O_RDONLY)
        except FileNotFoundError:
            shutil.rmtree(path, ignore_errors=True)  # ours, died before it took its lock
            continue
        except OSError:
            continue  # not ours, or not a machine: left alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # alive
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


class SimRootBusy(RuntimeError):
    """Another live SimHost is attached to this root."""


class SimHost(Host):
    """A simulated machine: a sysfs-shaped tree under ``root`` and a kernel model.

    ``root=None`` builds in a temporary directory removed by ``close()``; a directory
    that already holds a simulated machine is re-attached as it was left. Reads are
    the Host's, over the tree; writes go to the kernel model; holders are found in the
    real /proc (they are real processes holding the tree's files).
    """

    simulated = True

    def __init__(self, profile: str | Profile = "seed-x99",
                 root: str | os.PathLike[str] | None = None, *, desktop: bool = True,
                 time_scale: float = 1.0) -> None:
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ValueError(f"unknown simulated profile {profile!r}; "
                                 f"known: {', '.join(PROFILES)}")
            machine = PROFILES[profile]
        else:
            machine = profile  # a test's own machine
        self._own_root = root is None
        if root is None:
            sweep_orphans(scratch_dir() or tempfile.gettempdir())
        real_root = Path(tempfile.mkdtemp(prefix=TEMP_ROOT_PREFIX, dir=scratch_dir())
                         if root is None else root)
        real_root = real_root.resolve()
        if real_root == Path("/"):
            raise ValueError("a simulated machine is never built at /")
        real_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        # Its files are created and truncated as this user (root in demos and tests):
        # a directory someone else can write could hold planted links.
        check_own_dir(real_root)
        super().__init__(real_root)
        # Holders are real processes: look for them in the real /proc.
        self.proc_dir = Path("/proc")
        #: The profile's name (``seed-x99``).
        self.profile = machine.name
        #: The whole machine description (vfiod.sim.spec.Profile).
        self.machine = machine
        self.faults = Faults()
        #: (host path, value, errno or 0) of every write through _write, in order.
        self.write_log: list[tuple[str, str, int]] = []
        self.desktop: Holder | None = None
        self._holders: list[Holder] = []
        self._closed = False
        self._hub = EventHub(root=real_root)
        self._watcher: ExternalWriteWatcher | None = None
        self._lock_fd = self._lock_root()
        #: open_group() descriptors -> (group, the group's exclusive-open lock).
        self._fences: dict[int, tuple[int, int]] = {}
        fresh = False  # True once this SimHost may delete what it builds on failure
        try:
            saved = load(self.root)
            if saved is None and any(not n.startswith(".sim-") for n in os.listdir(self.root)):
                os.unlink(self.root / LOCK_FILE)
                raise ValueError(f"{self.root} is not empty and holds no simulated machine")
            if saved is not None and saved.profile != machine.name:
                raise ValueError(f"{self.root} holds a simulated {saved.profile} machine, "
                                 f"not {machine.name}")
            fresh = saved is None
            #: True when this SimHost found the machine a previous one left.
            self.reattached = saved is not None
            self.kernel = Kernel(machine, self.root, self._hub, self._device_held,
                                 load_subset(machine.devices), saved)
            self.kernel.time_scale = time_scale
            self._watcher = ExternalWriteWatcher(self.kernel)
            self.kernel.on_change = self._watcher.sync_watches
            self._watcher.start()
            self.kernel.resume()
            session = machine.desktop
            if desktop and session is not None and self.kernel.children_active(session.gpu):
                self.desktop = self.spawn_holder(list(session.paths), comm=session.comm)
        except BaseException:
            self.close()
            if fresh and not self._own_root:
                self._remove_tree()
            raise

    # -- Host -------------------------------------------------------------------------
    def _write(self, path: str, value: str) -> None:
        resolved = self.host_path(canonical(self.real_path(path))) or path
        verdict = self.faults.check(path, resolved)
        if verdict.crash_before:
            raise SimulatedCrash(f"killed before writing {value.strip()!r} to {path}")
        if verdict.errno:
            self.write_log.append((path, value, verdict.errno))
            raise OSError(verdict.errno, os.strerror(verdict.errno), path)
        if verdict.delay:
            time.sleep(verdict.delay)
        try:
            self.kernel.write(path, value)
        except OSError as exc:
            self.write_log.append((path, value, exc.errno or 0))
            raise
        self.write_log.append((path, value, 0))
        if verdict.crash_after:
            raise SimulatedCrash(f"killed after writing {value.strip()!r} to {path}")

    def exclusive_open_errno(self, node: str) -> int:
        resolved = self.host_path(os.path.realpath(self.real_path(node))) or node
        if not resolved.startswith("/dev/") or not os.path.exists(self.real_path(resolved)):
            return errno.ENOENT
        return self.kernel.storage.exclusive_open_errno(node_name(resolved))

    def node_device_number(self, path: str) -> str | None:
        # The tree's nodes are plain files: the model knows the number each stands for.
        resolved = self.host_path(os.path.realpath(self.real_path(path))) or path
        if not resolved.startswith("/dev/") or not os.path.exists(self.real_path(resolved)):
            return None
        name = node_name(resolved)
        return self.kernel.storage.number(name) if self.kernel.storage.exists(name) else None

    def file_device_number(self, path: str) -> str | None:
        return self.kernel.storage.file_device_number(path)

    def read_text(self, path: str) -> str | None:
        # The real kernel: while an unbind of a device waits for its device fd, a read
        # of that device's driver_override waits too (device_lock; kernel-facts.md).
        if path.endswith("/driver_override"):
            self._wait_while_releasing(os.path.basename(os.path.dirname(path)))
        return super().read_text(path)

    def is_vfio_device_fd(self, target: str) -> bool:
        # The stand-in for a 6.1 device fd is shown like the anonymous inode it models.
        return (super().is_vfio_device_fd(target)
                or target.startswith(self._prefix + PRIVATE_DEVICE_FD_DIR + "/"))

    def open_group(self, group: int) -> int:
        lock = lock_group(os.fspath(self.root), group)  # EBUSY: another opener has it
        try:
            fd = super().open_group(group)
        except BaseException:
            os.close(lock)
            raise
        self._fences[fd] = (group, lock)
        return fd

    def close_group(self, fd: int) -> None:
        _group, lock = self._fences.pop(fd, (0, -1))
        try:
            os.close(fd)
        finally:
            if lock >= 0:
                os.close(lock)

    def vfio_hot_reset(self, address: str, group_fds: Mapping[int, int] | None = None
                       ) -> list[str]:
        group = self.kernel.states[address].group if address in self.kernel.states else None
        node = f"/dev/vfio/{group}" if group is not None else "/dev/vfio"
        try:
            reset = self.kernel.hot_reset(
                address, lambda node: self._held_by_another(node, group_fds or {}))
        except OSError as exc:
            err = exc.errno or errno.EIO
            self.write_log.append((node, "hot reset", err))
            raise HostWriteError(node, "hot reset", err, address) from None
        self.write_log.append((node, "hot reset", 0))
        return reset

    def load_module(self, name_or_modalias: str) -> None:
        self.kernel.load_module(name_or_modalias)

    def module_loaded(self, name: str) -> bool:
        return self.kernel.module_loaded(name)

    def open_events(self) -> SimEventSource:
        return self._hub.open()

    def driver_loadable(self, name: str) -> bool:
        return self.kernel.driver_loadable(name)

    def kernel_choice(self, modalias: str) -> str | None:
        return self.kernel.kernel_choice(modalias)

    # -- the simulation's own tools ------------------------------------------------------
    @property
    def storage(self) -> Storage:
        """The block layer: mount namespaces, mounts, swap, dm/md/loop, btrfs."""
        return self.kernel.storage

    def spawn_holder(self, paths: Sequence[str], comm: str = "qemu-system-x86",
                     device_fds: Sequence[str] = (), release_on_remove: bool = False
                     ) -> Holder:
        """Start a real process holding these host paths open (see vfiod.sim.holder).

        *device_fds*: addresses whose VFIO device fd it holds, through the cdev where
        the kernel has them, or through the group for ``@ADDRESS``.
        *release_on_remove*: it closes them all at a ``remove`` uevent of one of them.
        """
        holder = spawn_holder(self.root, paths, comm=comm, device_fds=device_fds,
                              release_on_remove=release_on_remove)
        self._holders.append(holder)
        self.kernel.guest_used(self._guest_devices(paths, device_fds))
        return holder

    def _guest_devices(self, paths: Sequence[str], device_fds: Sequence[str]) -> list[str]:
        """The functions a holder of these paths drives: every member of a group whose
        node it holds, and the functions whose device fds it holds."""
        used = [a.lstrip("@") for a in device_fds]
        for path in paths:
            name = path.rsplit("/", 1)[-1]
            if path.startswith("/dev/vfio/") and name.isdigit():
                used += self.kernel.group_members(int(name))
        return used

    def sync_external(self, timeout: float = 5.0) -> bool:
        """Wait until direct writes to the tree made so far have been applied."""
        return self._watcher.sync(timeout) if self._watcher else False

    @property
    def external_log(self) -> list[tuple[str, str, int]]:
        """(host path, value, errno or 0) of every direct write to the tree, in order."""
        return self._watcher.log if self._watcher else []

    def close(self) -> None:
        """Stop the threads, end this SimHost's own holders, remove a temporary root."""
        if self._closed:
            return
        self._closed = True
        kernel = getattr(self, "kernel", None)
        if kernel is not None:
            kernel.close()
        if self._watcher is not None:
            self._watcher.stop()
        for holder in self._holders:
            holder.close()
        self._hub.close()
        os.close(self._lock_fd)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SimHost:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------
    def _device_held(self, host_path: str) -> bool:
        return bool(self.holders([host_path]))

    def _held_by_another(self, host_path: str, group_fds: Mapping[int, int]) -> bool:
        # A real hot reset opens every group not in *group_fds* itself, and that open is
        # exclusive even within one process: a group vfiod fenced but did not hand over
        # is as busy as one a guest holds. Otherwise only other openers are in the way,
        # whether they hold the node, a device fd or a cdev.
        group = host_path.rpartition("/")[2]
        given = {g for g, fd in group_fds.items() if self._fences.get(fd, (None,))[0] == g}
        if group.isdigit() and int(group) not in given:
            try:
                os.close(lock_group(os.fspath(self.root), int(group)))
            except OSError:
                return True
        return any(p.pid != os.getpid() for p in self.holders([host_path]).get(host_path, []))

    def _wait_while_releasing(self, address: str) -> None:
        state = self.kernel.states.get(address) if hasattr(self, "kernel") else None
        while state is not None and state.releasing and not self._closed:
            time.sleep(0.02)

    def _lock_root(self) -> int:
        fd = open_own_file(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SimRootBusy(f"{self.root} is in use by another simulated kernel "
                              f"(pid {owner})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _remove_tree(self) -> None:
        remove_machine(self.root)


def remove_machine(root: Path) -> None:
    """Remove the simulated machine's tree and state from *root* (nothing else there)."""
    for name in ("sys", "dev", "proc", "usr", PRIVATE_DEVICE_FD_DIR.lstrip("/"),
                 GROUP_LOCK_DIR, EXTERNAL_DIR, STATE_FILE):
        path = root / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def reboot(root: str | os.PathLike[str]) -> None:
    """Reboot the simulated machine at *root*, which no SimHost may be attached to.

    Everything the kernel held is gone: the next SimHost on *root* boots the profile
    afresh, with every device where the profile puts it and a new boot id.
    """
    path = Path(root).resolve()
    check_own_dir(path)
    fd = open_own_file(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SimRootBusy(f"{path} is in use by a simulated kernel: close it "
                              "before rebooting") from None
        remove_machine(path)
    finally:
        os.close(fd)
