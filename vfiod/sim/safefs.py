"""Opening the simulated machine's own files without following what others planted.

The simulated host runs as root in demos and tests, often in a shared place (/dev/shm,
a --sim-root a user named). A name it creates or truncates there must never be a
symbolic link (or a hard link) someone else put in its way, and a directory it removes
must be its own: these helpers are the one place that checks.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat


class UnsafeSimPath(OSError):
    """A path the simulated host would write is not its own (planted by someone else)."""


def check_own_dir(path: str | os.PathLike[str]) -> os.stat_result:
    """Refuse *path* unless it is a real directory (no symbolic link) owned by this
    process's user and writable by no one else (its group may write it when that is
    the user's own group). Its lstat."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeSimPath(f"{os.fspath(path)} is not a directory (a symbolic link?): "
                            "refusing to build a simulated machine there")
    if st.st_uid != os.geteuid():
        raise UnsafeSimPath(f"{os.fspath(path)} is owned by uid {st.st_uid}, not by uid "
                            f"{os.geteuid()}: refusing to use it for a simulated machine")
    # Group-writable is others-writable unless the group is this user's own (a user
    # private group, as umask 002 makes directories).
    writable = stat.S_IWOTH | (stat.S_IWGRP if st.st_gid != os.getegid() else 0)
    if st.st_mode & writable:
        raise UnsafeSimPath(f"{os.fspath(path)} is writable by others (mode "
                            f"{stat.S_IMODE(st.st_mode):04o}): chmod go-w it, or use "
                            "another directory for the simulated machine")
    return st


def open_own_file(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """os.open(*path*) for the simulated host's own bookkeeping file (a lock, a marker).

    Never follows a symbolic link at *path* (O_NOFOLLOW), never opens a FIFO or device
    (checked before any read or write), and refuses a file owned by another user or
    with another name linked to it. A descriptor, or UnsafeSimPath / OSError.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:  # the name is a symbolic link
            raise UnsafeSimPath(f"{os.fspath(path)} is a symbolic link: refusing to "
                                "follow it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeSimPath(f"{os.fspath(path)} is not a regular file")
        if st.st_uid != os.geteuid():
            raise UnsafeSimPath(f"{os.fspath(path)} is owned by uid {st.st_uid}, not by "
                                f"uid {os.geteuid()}")
        if st.st_nlink != 1:
            raise UnsafeSimPath(f"{os.fspath(path)} has {st.st_nlink} names (a planted "
                                "hard link?)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_own_file(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace the contents of the simulated host's own file *path* (see open_own_file)."""
    fd = open_own_file(path, os.O_WRONLY | os.O_CREAT, mode)
    try:
        os.ftruncate(fd, 0)  # only once it is known to be ours
        os.write(fd, data)
    finally:
        os.close(fd)


def temp_name(directory: str, prefix: str) -> str:
    """A fresh, unpredictable name in *directory* for a file about to be created with
    O_EXCL (or a symbolic link, which never follows an existing name)."""
    return os.path.join(directory, f"{prefix}{secrets.token_hex(8)}")
