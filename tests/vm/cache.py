"""Where the tier keeps what it fetched and built between runs, and the lock on it;
what the QEMU tiers (this one and tests/distro) share: file locks, pruning old run
folders, and the one line a tier that could not run prints."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

#: A tier's exit code when it could not run and VFIOD_VM_OPTIONAL is not set.
EXIT_NOT_RUN = 2


def cache_dir() -> Path:
    """VFIOD_VM_CACHE, else $XDG_CACHE_HOME/vfiod-vm, else ~/.cache/vfiod-vm."""
    explicit = os.environ.get("VFIOD_VM_CACHE")
    if explicit:
        return Path(explicit).absolute()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).absolute() / "vfiod-vm"


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on *directory* so two runs never build at once."""
    directory.mkdir(parents=True, exist_ok=True)
    with flocked(directory / ".lock", "w"):
        yield


@contextlib.contextmanager
def flocked(path: str | Path, mode: str = "a") -> Iterator[None]:
    """Hold an exclusive flock on the file at *path* (opened with *mode*, so created)."""
    with open(path, mode) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prune_runs(runs: Path, keep: int) -> None:
    """Remove all but the newest *keep* run folders (all of them when *keep* is 0)."""
    if not runs.is_dir():
        return
    folders = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for old in folders[:-keep] if keep else folders:
        shutil.rmtree(old, ignore_errors=True)


def not_run(tier: str, reason: str) -> int:
    """Say in one line that *tier* did not run; 0 only when it is optional."""
    optional = os.environ.get("VFIOD_VM_OPTIONAL") == "1"
    tail = " (VFIOD_VM_OPTIONAL=1)" if optional else \
        "; set VFIOD_VM_OPTIONAL=1 to allow that"
    print(f"{tier} was NOT run: {reason}{tail}", flush=True)
    return 0 if optional else EXIT_NOT_RUN


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that it either exists whole or not at all (a stamp, an image)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
