"""Initramfs images for tests: newc cpio archives, as mkinitramfs and dracut write them."""

from __future__ import annotations

import gzip
import lzma
import subprocess
from collections.abc import Mapping
from pathlib import Path


def newc(files: Mapping[str, bytes]) -> bytes:
    """One uncompressed newc archive holding *files* (names as cpio stores them)."""
    out = bytearray()
    for ino, (name, data) in enumerate([*files.items(), ("TRAILER!!!", b"")], start=1):
        encoded = name.encode() + b"\0"
        mode = 0 if name == "TRAILER!!!" else 0o100755
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(f"{f:08X}".encode() for f in fields) + encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    out += b"\0" * (-len(out) % 512)  # cpio pads its output to a block
    return bytes(out)


def compress(data: bytes, codec: str) -> bytes:
    """*data* compressed as an initramfs tool does it."""
    if codec == "none":
        return data
    if codec == "gzip":
        return gzip.compress(data)
    if codec == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    return subprocess.run([codec, "-q", "-c"], input=data, capture_output=True,
                          check=True).stdout


def image(files: Mapping[str, bytes], codec: str = "gzip",
          early: Mapping[str, bytes] | None = None) -> bytes:
    """A Debian-style image: an uncompressed early archive (microcode), then the main one."""
    head = newc(early if early is not None else {"kernel/x86/microcode/GenuineIntel.bin": b"uc"})
    return head + compress(newc(files), codec)


def write_image(root: Path, release: str, files: Mapping[str, bytes],
                codec: str = "gzip") -> Path:
    """Put /boot/initrd.img-RELEASE under *root* and say that RELEASE runs."""
    osrelease = root / "proc/sys/kernel/osrelease"
    osrelease.parent.mkdir(parents=True, exist_ok=True)
    osrelease.write_text(release + "\n")
    path = root / "boot" / f"initrd.img-{release}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image(files, codec))
    return path
