"""Writes made directly to the simulated tree's files, behind the daemon's back.

A script or an applet developer may ``echo 0000:06:00.0 > $ROOT/sys/bus/pci/drivers/
nvidia/unbind``. A thread watches every directory holding control files (inotify,
IN_CLOSE_WRITE); when a file's content differs from what the model put there, the
content is applied through the same path as ``SimHost._write`` and the file is put
back to the model's content (write-only files empty, ``driver_override`` its value).
The writer cannot get an errno this way: failures are logged and kept in ``log``.

The sim's own rewrites replace files by rename, which raises no IN_CLOSE_WRITE for
the file's name, so they are never mistaken for a user's write. Writes are handled
one at a time in order, like a single writer: two writes to the same file in quick
succession can merge into the last one (a real sysfs file would see both).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
from pathlib import Path

from inotify_simple import INotify, flags

from vfiod.sim.kernel import Kernel
from vfiod.sim.safefs import check_own_dir, write_own_file
from vfiod.sim.tree import TEMP_PREFIX

log = logging.getLogger("vfiod.sim")

#: Private directory under the root where ``sync`` drops its marker.
SYNC_DIR = ".sim-watch"


class ExternalWriteWatcher:
    """Applies direct writes to the tree's control files, in the order they happen."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        #: (host path, value, errno or 0) of every direct write applied, in order.
        self.log: list[tuple[str, str, int]] = []
        self._inotify = INotify()
        self._wd_dir: dict[int, str] = {}
        self._dir_wd: dict[str, int] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        # Directories watched since the thread last looked: a write can land in a new
        # device's directory before its watch exists (a script writing `remove` the
        # moment a rescan shows the device), so each is checked once for such writes.
        self._new_dirs: list[tuple[int, str]] = []
        self._poke_r, self._poke_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._sync_dir = Path(kernel.root) / SYNC_DIR
        self._sync_dir.mkdir(mode=0o700, exist_ok=True)
        check_own_dir(self._sync_dir)  # a planted link would have the marker written elsewhere
        self._sync_wd = self._inotify.add_watch(self._sync_dir, flags.CLOSE_WRITE)
        self._sync_seen = threading.Condition()
        self._sync_token = 0
        self._sync_done = 0
        self._thread = threading.Thread(target=self._run, name="sim external writes",
                                        daemon=True)

    def start(self) -> None:
        """Watch the control directories the tree has now and start the thread."""
        with self.kernel.lock:
            self.sync_watches()
            self._new_dirs.clear()  # nothing was written behind a watch not yet there
        self._thread.start()

    def sync_watches(self) -> None:
        """Watch exactly the directories that hold control files (called under the lock)."""
        wanted = self.kernel.tree.control_dirs()
        for gone in set(self._dir_wd) - wanted:
            wd = self._dir_wd.pop(gone)
            self._wd_dir.pop(wd, None)
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass  # the directory is gone, and its watch with it
        for new in wanted - set(self._dir_wd):
            try:
                wd = self._inotify.add_watch(self.kernel.tree.real(new), flags.CLOSE_WRITE)
            except OSError:
                continue
            self._dir_wd[new] = wd
            self._wd_dir[wd] = new
            self._new_dirs.append((wd, new))
        if self._new_dirs:
            try:
                os.write(self._poke_w, b"!")
            except BlockingIOError:
                pass  # already poked

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until every direct write made before this call has been handled."""
        with self._sync_seen:
            self._sync_token += 1
            token = self._sync_token
        write_own_file(self._sync_dir / "marker", str(token).encode())
        with self._sync_seen:
            return self._sync_seen.wait_for(lambda: self._sync_done >= token, timeout)

    def stop(self) -> None:
        """End the thread and release the inotify descriptor."""
        if self._wake_w < 0:
            return
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self._inotify.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        os.close(self._poke_r)
        os.close(self._poke_w)
        self._wake_w = -1

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._inotify.fileno(), self._wake_r, self._poke_r],
                                        [], [])
            if self._wake_r in ready:
                return
            if self._poke_r in ready:
                self._catch_up()
            for event in self._inotify.read(timeout=0):
                try:
                    self._handle(event.wd, event.mask, event.name)
                except Exception:  # the watcher must outlive any one bad event
                    log.exception("simulated kernel: handling a direct write failed")

    def _catch_up(self) -> None:
        """Apply writes made in newly watched directories before their watch existed."""
        try:
            while os.read(self._poke_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self.kernel.lock:
            fresh, self._new_dirs = self._new_dirs, []
            names = []
            for wd, directory in fresh:
                if self._wd_dir.get(wd) != directory:
                    continue  # gone again
                try:
                    entries = os.listdir(self.kernel.tree.real(directory))
                except OSError:
                    continue
                for name in entries:
                    node = self.kernel.tree.node(f"{directory}/{name}")
                    if node is not None and node.kind == "file" and node.control is not None:
                        names.append((wd, name))
        for wd, name in names:
            try:
                self._handle(wd, flags.CLOSE_WRITE, name)
            except Exception:  # the watcher must outlive any one bad file
                log.exception("simulated kernel: handling a direct write failed")

    def _handle(self, wd: int, mask: int, name: str) -> None:
        if wd == self._sync_wd:
            if mask & flags.CLOSE_WRITE:
                try:
                    token = int((self._sync_dir / name).read_text() or 0)
                except (OSError, ValueError):
                    return
                with self._sync_seen:
                    self._sync_done = max(self._sync_done, token)
                    self._sync_seen.notify_all()
            return
        if not mask & flags.CLOSE_WRITE or name.startswith(TEMP_PREFIX):
            return
        with self.kernel.lock:
            directory = self._wd_dir.get(wd)
            if directory is None:
                return
            host = f"{directory}/{name}"
            node = self.kernel.tree.node(host)
        if node is None or node.kind != "file":
            return
        try:
            with open(self.kernel.tree.real(host), "rb") as f:
                content = f.read()
        except OSError:
            return
        if content == node.data:
            return  # the model's own content: nothing was written behind its back
        value = content.decode("utf-8", "surrogateescape")
        err = errno.EACCES  # a read-only attribute: sysfs would refuse the open
        if node.control is not None:
            try:
                self.kernel.write(host, value)
                err = 0
            except OSError as exc:
                err = exc.errno or errno.EIO
        self.log.append((host, value, err))
        if err:
            log.warning("simulated kernel: direct write of %r to %s failed: %s", value, host,
                        os.strerror(err))
        with self.kernel.lock:
            self.kernel.tree.restore(host)
