"""The on-disk tree: makes a directory under the sim root look like the wanted nodes.

Each part of the model (a device, a driver, a module...) is an *owner* that declares
the nodes it wants (files, links, directories, device nodes). ``Tree.apply`` compares
with what the owner had, removes what went away (deepest first) and creates or rewrites
what changed (shallowest first). Rewrites of existing files are atomic (write a
temporary file, rename it over), so a reader never sees a half-written attribute and
the external-write watcher never mistakes a rewrite for a user's write. Device nodes
(``/dev/vfio/31``) are created once and never replaced: holders keep them open.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vfiod.sim.safefs import temp_name

#: Temporary files of atomic rewrites start with this; the watcher ignores them.
TEMP_PREFIX = ".sim-tmp-"


@dataclass(frozen=True)
class Control:
    """What a writable kernel attribute controls: ``Control("device", "reset", addr)``."""

    scope: str  # device, driver, bus, vtcon
    attr: str  # bind, unbind, driver_override, reset, ...
    key: str = ""  # the device address, driver name or vtcon name


@dataclass(frozen=True)
class Node:
    """One wanted entry of the tree."""

    kind: str  # "dir", "file", "link", "dev"
    data: bytes = b""  # file contents, or the link target
    mode: int = 0o444
    control: Control | None = None


DIR = Node("dir", mode=0o755)


def text(content: str, mode: int = 0o444, control: Control | None = None) -> Node:
    """A text attribute; sysfs attributes end with a newline."""
    return Node("file", content.encode(), mode, control)


def link(target: str) -> Node:
    """A symbolic link, relative like sysfs's."""
    return Node("link", target.encode())


def dev(mode: int = 0o660) -> Node:
    """A device node stand-in: an empty regular file that processes can hold open."""
    return Node("dev", mode=mode)


def _depth(path: str) -> int:
    return path.count("/")


class Tree:
    """The nodes every owner wants, kept in step with the directory under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = os.fspath(root)
        self._umask = _current_umask()
        self._owned: dict[str, dict[str, Node]] = {}
        self._nodes: dict[str, Node] = {}
        self._control_dirs: Counter[str] = Counter()

    def real(self, host_path: str) -> str:
        """The real path of a host path."""
        return self._root + host_path

    def node(self, host_path: str) -> Node | None:
        """The node the model wants at *host_path* (None when it wants nothing there)."""
        return self._nodes.get(host_path)

    def control_dirs(self) -> set[str]:
        """Directories holding writable attributes (the ones the watcher watches)."""
        return set(self._control_dirs)

    def apply(self, wanted: Mapping[str, Mapping[str, Node]], *, trust_disk: bool = False) -> None:
        """Bring each owner in *wanted* to its wanted nodes (an empty mapping removes it).

        With *trust_disk* False (re-attaching to an existing tree), a node the model has
        not rendered before is compared with the disk first and left alone when equal.
        """
        removals: list[str] = []
        writes: list[tuple[str, Node, Node | None]] = []
        for owner, new in wanted.items():
            old = self._owned.get(owner, {})
            for path, node in old.items():
                repl = new.get(path)
                if repl is None or repl.kind != node.kind:
                    removals.append(path)
            for path, node in new.items():
                before = old.get(path)
                if before != node:
                    writes.append((path, node, before if before and before.kind == node.kind
                                   else None))
            if new:
                self._owned[owner] = dict(new)
            else:
                self._owned.pop(owner, None)
            for path, node in old.items():
                self._forget(path, node)
            for path, node in new.items():
                self._remember(path, node)
        for path in sorted(removals, key=_depth, reverse=True):
            self._remove(path)
        for path, node, before in sorted(writes, key=lambda w: _depth(w[0])):
            self._write(path, node, before, trust_disk)

    def prune(self) -> None:
        """Delete what is on disk but wanted by no owner (after re-attaching to a tree
        that a killed process left half-updated)."""
        root = os.fspath(self.root)
        for top in ("sys", "dev", "proc", "usr"):
            for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
                host_dir = dirpath[len(root):]
                for name in list(dirnames):
                    if f"{host_dir}/{name}" not in self._nodes:
                        dirnames.remove(name)
                        real = os.path.join(dirpath, name)
                        if os.path.islink(real):
                            os.unlink(real)
                        else:
                            shutil.rmtree(real, ignore_errors=True)
                for name in filenames:
                    if f"{host_dir}/{name}" not in self._nodes:
                        os.unlink(os.path.join(dirpath, name))

    def restore(self, host_path: str) -> None:
        """Rewrite a file with the model's contents (after a user wrote it directly)."""
        node = self._nodes.get(host_path)
        if node is not None and node.kind == "file":
            self._replace_file(self.real(host_path), node)

    # -- bookkeeping -----------------------------------------------------------------
    def _remember(self, path: str, node: Node) -> None:
        self._nodes[path] = node
        if node.control is not None:
            self._control_dirs[os.path.dirname(path)] += 1

    def _forget(self, path: str, node: Node) -> None:
        if self._nodes.get(path) is node:
            del self._nodes[path]
        if node.control is not None:
            parent = os.path.dirname(path)
            self._control_dirs[parent] -= 1
            if self._control_dirs[parent] <= 0:
                del self._control_dirs[parent]

    # -- disk ------------------------------------------------------------------------
    def _remove(self, host_path: str) -> None:
        real = self.real(host_path)
        if os.path.isdir(real) and not os.path.islink(real):
            try:
                os.rmdir(real)
            except OSError:
                # Something the model does not know put a file here; sysfs would not
                # have let it, so it goes with the directory.
                shutil.rmtree(real, ignore_errors=True)
            return
        try:
            os.unlink(real)
        except FileNotFoundError:
            pass

    def _write(self, host_path: str, node: Node, before: Node | None, trust_disk: bool) -> None:
        real = self._root + host_path
        if node.kind == "dir":
            try:
                os.mkdir(real, node.mode)
            except FileExistsError:
                pass
        elif node.kind == "dev":
            try:
                # mknod, not open: a watcher of /dev (the daemon's inotify on /dev/vfio)
                # must not see an open/close that no process made.
                os.mknod(real, node.mode | stat.S_IFREG)
            except FileExistsError:
                return  # never replaced: a holder may have it open
            if node.mode & self._umask:
                os.chmod(real, node.mode)
        elif node.kind == "link":
            target = node.data.decode()
            if before is None:
                try:
                    os.symlink(target, real)
                    return
                except FileExistsError:
                    if not trust_disk and os.path.islink(real) and os.readlink(real) == target:
                        return
            self._replace_link(real, target)
        elif before is None:
            try:
                self._create_file(real, node)
            except FileExistsError:
                if trust_disk or not _same_file(real, node):
                    self._replace_file(real, node)
        else:
            self._replace_file(real, node)

    def _create_file(self, real: str, node: Node) -> None:
        fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     node.mode)
        try:
            if node.data:
                os.write(fd, node.data)
            if node.mode & self._umask:
                os.fchmod(fd, node.mode)  # the mode sysfs shows, not the umask's idea of it
        finally:
            os.close(fd)

    @staticmethod
    def _replace_file(real: str, node: Node) -> None:
        directory, name = os.path.split(real)
        # An unpredictable name, created exclusively: a link planted at a guessable
        # temporary name would otherwise have its target written.
        tmp = temp_name(directory, f"{TEMP_PREFIX}{name}.")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     node.mode)
        try:
            os.write(fd, node.data)
            os.fchmod(fd, node.mode)
        finally:
            os.close(fd)
        os.replace(tmp, real)

    @staticmethod
    def _replace_link(real: str, target: str) -> None:
        directory, name = os.path.split(real)
        tmp = temp_name(directory, f"{TEMP_PREFIX}{name}.")
        os.symlink(target, tmp)  # never follows or replaces an existing name
        if os.path.isdir(real) and not os.path.islink(real):
            shutil.rmtree(real)
        os.replace(tmp, real)


def _same_file(real: str, node: Node) -> bool:
    try:
        with open(real, "rb") as f:
            return f.read() == node.data and (os.fstat(f.fileno()).st_mode & 0o7777) == node.mode
    except OSError:
        return False



def _current_umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: always fchmod


def relative_link(target: str, link_path: str) -> str:
    """The relative path from *link_path*'s directory to *target* (both absolute, clean)."""
    start = link_path.split("/")[1:-1]
    dest = target.split("/")[1:]
    common = 0
    for a, b in zip(start, dest, strict=False):
        if a != b:
            break
        common += 1
    return "/".join([".."] * (len(start) - common) + dest[common:]) or "."
