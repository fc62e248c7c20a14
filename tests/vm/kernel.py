"""The guest kernel: Debian's current linux-image-amd64 target, unpacked into the cache.

``apt-get download`` fetches the package (no root, nothing installed), ``dpkg -x``
unpacks it and ``depmod -b`` writes the modules.dep the .deb does not ship.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import write_atomic

META_PACKAGE = "linux-image-amd64"
STAMP = ".vfiod-unpacked"
_IMAGE_PACKAGE = re.compile(r"^\s*Depends:\s*(linux-image-(\d[^\s]*-amd64))\b", re.M)


class SetupError(RuntimeError):
    """The kernel or the initramfs could not be prepared; the message says why."""


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: its version and where its image and modules are."""

    version: str  # 6.1.0-57-amd64
    root: Path  # the dpkg -x folder

    @property
    def image(self) -> Path:
        """The bzImage QEMU boots."""
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def vmlinux(self) -> Path:
        """The uncompressed kernel, when extracted (see extract_vmlinux)."""
        return self.root / f"vmlinux-{self.version}"

    @property
    def boot_image(self) -> Path:
        """What QEMU boots: the uncompressed ELF when there is one, else the bzImage."""
        return self.vmlinux if self.vmlinux.exists() else self.image

    @property
    def modules(self) -> Path:
        """/lib/modules/VERSION inside the unpacked package."""
        return self.root / "lib" / "modules" / self.version


def resolve_package() -> str | None:
    """The image package linux-image-amd64 depends on now, or None when apt cannot say."""
    try:
        out = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True,
                             text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return image_package(out)


def image_package(apt_cache_depends: str) -> str | None:
    """The first ``Depends: linux-image-<version>-amd64`` of ``apt-cache depends``."""
    m = _IMAGE_PACKAGE.search(apt_cache_depends)
    return m.group(1) if m else None


def version_of(package: str) -> str:
    """linux-image-6.1.0-57-amd64 -> 6.1.0-57-amd64."""
    return package.removeprefix("linux-image-")


def cached_kernels(cache: Path) -> list[Kernel]:
    """Kernels already unpacked in the cache, newest first by name."""
    base = cache / "kernel"
    found = [Kernel(d.name, d) for d in base.iterdir() if (d / STAMP).exists()] \
        if base.is_dir() else []
    # Natural order: 6.1.0-100 is newer than 6.1.0-57.
    return sorted(found, key=lambda k: [int(p) if p.isdigit() else p
                                        for p in re.split(r"(\d+)", k.version)],
                  reverse=True)


def ensure_kernel(cache: Path, log: Callable[[str], None] = print) -> Kernel:
    """Return the unpacked kernel, fetching and unpacking it first when needed.

    Without apt's package lists (offline, or no apt at all) the newest cached kernel is
    used; with neither, SetupError.
    """
    package = resolve_package()
    if package is None:
        cached = cached_kernels(cache)
        if cached:
            log(f"vm: apt-cache cannot resolve {META_PACKAGE}; using the cached "
                f"{cached[0].version}")
            return cached[0]
        raise SetupError(f"apt-cache cannot resolve {META_PACKAGE} and no kernel is cached")
    kernel = Kernel(version_of(package), cache / "kernel" / version_of(package))
    if (kernel.root / STAMP).exists():
        extract_vmlinux(kernel)
        return kernel
    log(f"vm: fetching {package}")
    deb = _download(package, cache / "debs")
    log(f"vm: unpacking {deb.name}")
    if kernel.root.exists():
        shutil.rmtree(kernel.root)  # a half-unpacked tree from an interrupted run
    kernel.root.mkdir(parents=True)
    _run(["dpkg", "-x", str(deb), str(kernel.root)], f"dpkg -x {deb.name}")
    if not kernel.image.is_file() or not kernel.modules.is_dir():
        raise SetupError(f"{deb.name} holds no vmlinuz-{kernel.version} or its modules")
    _run(["depmod", "-b", str(kernel.root), kernel.version], "depmod")
    write_atomic(kernel.root / STAMP, f"{package}\n".encode())
    deb.unlink()  # 70 MB that the unpacked tree makes useless
    extract_vmlinux(kernel)
    return kernel


def extract_vmlinux(kernel: Kernel) -> None:
    """Unpack the bzImage's payload once, so QEMU can boot it directly (PVH entry).

    Decompressing the xz payload under TCG took the guest 8-11 s of every boot; PVH
    boot of the ELF skips it. Needs CONFIG_PVH; without it (or for a payload format
    the standard library cannot unpack) the bzImage is booted as before.
    """
    if kernel.vmlinux.exists():
        return
    config = kernel.root / "boot" / f"config-{kernel.version}"
    if "CONFIG_PVH=y" not in config.read_text(errors="replace").splitlines():
        return
    data = kernel.image.read_bytes()
    for magic, decompressor in ((b"\xfd7zXZ\x00", lzma.LZMADecompressor),
                                (b"\x1f\x8b\x08", lambda: zlib.decompressobj(31))):
        start = data.find(magic)
        if start < 0:
            continue
        try:
            elf = decompressor().decompress(data[start:])
        except (lzma.LZMAError, zlib.error):
            continue
        if elf[:4] == b"\x7fELF":
            write_atomic(kernel.vmlinux, elf)
            return


def _download(package: str, into: Path) -> Path:
    """apt-get download *package* into *into*; runs apt-get update once if that fails."""
    into.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        with tempfile.TemporaryDirectory(dir=into) as tmp:
            # Sandbox user root: apt's _apt user may not write into the cache folder.
            proc = subprocess.run(
                ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", package],
                cwd=tmp, capture_output=True, text=True, timeout=600, check=False)
            debs = list(Path(tmp).glob(f"{package}_*.deb"))
            if proc.returncode == 0 and debs:
                target = into / debs[0].name
                debs[0].replace(target)
                return target
        if attempt == 0:
            _run(["apt-get", "-q", "update"], "apt-get update", timeout=600)
    why = (proc.stderr.strip().splitlines() or ["no .deb appeared"])[-1]
    raise SetupError(f"apt-get download {package} failed: {why}")


def _run(cmd: list[str], what: str, timeout: float = 300) -> None:
    """Run a setup step; SetupError with its last stderr line when it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise SetupError(f"{what} failed: {why}")
