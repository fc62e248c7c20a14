"""The guest's initramfs: busybox-static, the modules to reach the 9p root, and init.sh.

It is cached under a name keyed by the kernel version and a hash of everything that
goes in (init.sh, the module list, busybox), so a changed init script rebuilds it and
an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from .cache import write_atomic
from .kernel import Kernel, SetupError

INIT_SCRIPT = Path(__file__).with_name("init.sh")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
PT_INTERP = 3

#: What the guest needs before it can mount this machine's / (kernel-facts.md);
#: their dependencies are added by modprobe --show-depends.
MODULES = ("netfs", "fscache", "9pnet", "9p", "virtio_ring", "virtio", "9pnet_virtio",
           "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "overlay")


def find_busybox() -> Path | None:
    """A statically linked busybox (Debian's busybox-static), or None.

    Debian's dynamic busybox installs the same path; it cannot run in an initramfs
    without a libc, so it does not count.
    """
    for candidate in BUSYBOX_PATHS:
        path = Path(candidate)
        if path.is_file() and is_static_elf(path):
            return path
    return None


def is_static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF without a PT_INTERP (dynamic loader) header."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return False
            phoff, = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != PT_INTERP
               for i in range(phnum) if (i + 1) * phentsize <= len(table))


def module_files(kernel: Kernel, names: tuple[str, ...] = MODULES) -> list[Path]:
    """The .ko files for *names* and their dependencies, each once, in load order."""
    ordered: list[Path] = []
    for name in names:
        proc = subprocess.run(
            ["modprobe", "-d", str(kernel.root), "-S", kernel.version, "--show-depends", name],
            capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise SetupError(f"module {name} not found for {kernel.version}: "
                             f"{proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod":
                ko = Path(words[1])
                if not ko.is_absolute() or not ko.exists():
                    ko = kernel.root / words[1].lstrip("/")
                if ko not in ordered:
                    ordered.append(ko)
            # "builtin NAME": nothing to load.
    return ordered


def content_key(busybox: Path, modules: list[Path]) -> str:
    """A short hash of everything the image is made of."""
    h = hashlib.sha256()
    h.update(INIT_SCRIPT.read_bytes())
    h.update(busybox.read_bytes())
    for ko in modules:
        h.update(ko.name.encode())
        h.update(str(ko.stat().st_size).encode())
    return h.hexdigest()[:16]


def ensure_initramfs(cache: Path, kernel: Kernel) -> Path:
    """Return the initramfs for *kernel*, building it when no matching one is cached."""
    busybox = find_busybox()
    if busybox is None:
        raise SetupError("no static busybox (install busybox-static)")
    modules = module_files(kernel)
    key = content_key(busybox, modules)
    image = cache / "initramfs" / f"initramfs-{kernel.version}-{key}.cpio"
    if image.exists():
        return image
    image.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(image, _build(busybox, modules))
    for stale in image.parent.glob(f"initramfs-{kernel.version}-*.cpio"):
        if stale != image:  # built from an older init.sh
            stale.unlink()
    return image


def _build(busybox: Path, modules: list[Path]) -> bytes:
    """An uncompressed newc cpio archive (the modules are small; no compression to undo)."""
    with tempfile.TemporaryDirectory(prefix="vfiod-initramfs-") as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        (root / "modules").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        shutil.copy2(INIT_SCRIPT, root / "init")
        os.chmod(root / "init", 0o755)
        for ko in modules:
            shutil.copy2(ko, root / "modules" / ko.name)
        (root / "modules" / "order").write_text("".join(f"{ko.name}\n" for ko in modules))
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        if not shutil.which("cpio"):
            raise SetupError("cpio is not installed")
        proc = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--owner=0:0"],
                              input="\n".join(names).encode(), cwd=root,
                              capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise SetupError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout
