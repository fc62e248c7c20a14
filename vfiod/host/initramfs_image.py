"""Read files out of an initramfs image, the way the kernel unpacks it.

An image is one or more "newc" cpio archives back to back (Debian puts an uncompressed
early-microcode archive first), each ending with a ``TRAILER!!!`` entry and padded
with zeros; the last one is usually compressed. The kernel unpacks them in order, so a
later member of the same name wins: so does ``read_members``. gzip, xz, lzma and bzip2
are read with the standard library; zstd (Debian 12's and Fedora's default) and lz4
with the command of that name, which the initramfs tool that wrote the image needed too.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
import shutil
import subprocess
from collections.abc import Collection

_NEWC_MAGICS = (b"070701", b"070702")
_HEADER_SIZE = 110
_TRAILER = "TRAILER!!!"
#: (magic, how to decompress): standard-library codecs, or a command reading stdin.
_COMPRESSIONS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),  # the legacy format, `lz4 -l`, which initramfs tools write
    (b"\x04\x22\x4d\x18", "lz4"),  # the frame format
)
#: Most images decompress to tens of MB; a bound keeps a corrupt one from eating memory.
MAX_UNPACKED = 1 << 30


class ImageError(ValueError):
    """The image cannot be read (damaged, or compressed with a tool that is missing)."""


def member_name(name: str) -> str:
    """A cpio member's path as the initramfs sees it, without ``./`` or ``/``."""
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def read_members(data: bytes, wanted: Collection[str]) -> dict[str, bytes]:
    """The contents of the *wanted* files (paths without a leading /) found in *data*."""
    wanted_names = {member_name(w) for w in wanted}
    found: dict[str, bytes] = {}
    _read_archives(data, wanted_names, found, depth=0)
    return found


def _read_archives(data: bytes, wanted: set[str], found: dict[str, bytes],
                   depth: int) -> None:
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding between archives
            pos += 1
            continue
        head = data[pos:pos + 6]
        if head in _NEWC_MAGICS:
            pos = _read_newc(data, pos, wanted, found)
            continue
        codec = next((name for magic, name in _COMPRESSIONS
                      if data.startswith(magic, pos)), None)
        if codec is None:
            raise ImageError(f"unknown data at byte {pos} (neither cpio nor a known "
                             "compression)")
        if depth > 2:
            raise ImageError("compressed archives nested too deep")
        unpacked, rest = _decompress(codec, data[pos:])
        _read_archives(unpacked, wanted, found, depth + 1)
        # What follows the compressed stream: padding, or (rarely) more archives.
        data, pos = rest, 0


def _read_newc(data: bytes, pos: int, wanted: set[str], found: dict[str, bytes]) -> int:
    """Read one newc archive starting at *pos*; the position after its trailer."""
    while True:
        header = data[pos:pos + _HEADER_SIZE]
        if len(header) < _HEADER_SIZE or header[:6] not in _NEWC_MAGICS:
            raise ImageError(f"damaged cpio header at byte {pos}")
        try:
            fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise ImageError(f"damaged cpio header at byte {pos}") from None
        file_size, name_size = fields[6], fields[11]
        name_start = pos + _HEADER_SIZE
        name = data[name_start:name_start + name_size].rstrip(b"\0").decode(
            "utf-8", "replace")
        data_start = _align4(name_start + name_size)
        data_end = data_start + file_size
        if data_end > len(data):
            raise ImageError(f"cpio member {name!r} runs past the end of the image")
        if name == _TRAILER:
            return data_end
        name = member_name(name)
        if name in wanted:
            found[name] = data[data_start:data_end]
        pos = _align4(data_end)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _decompress(codec: str, data: bytes) -> tuple[bytes, bytes]:
    """(what one compressed stream at the start of *data* holds, the bytes after it)."""
    try:
        if codec == "gzip":
            gz = zlib.decompressobj(wbits=31)
            return gz.decompress(data, MAX_UNPACKED), gz.unused_data
        if codec in ("xz", "lzma"):
            xz = lzma.LZMADecompressor()
            return xz.decompress(data, MAX_UNPACKED), xz.unused_data
        if codec == "bzip2":
            bz = bz2.BZ2Decompressor()
            return bz.decompress(data, MAX_UNPACKED), bz.unused_data
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
        raise ImageError(f"damaged {codec} data: {exc}") from None
    # The command reads to the end: the kernel treats the rest of the image alike.
    return _decompress_with_command(codec, data), b""


def _decompress_with_command(codec: str, data: bytes) -> bytes:
    program = shutil.which(codec)
    if program is None:
        raise ImageError(f"the image is {codec}-compressed and `{codec}` is not installed")
    # -q: no progress on stderr; zstd and lz4 both take -d -c.
    proc = subprocess.run([program, "-d", "-c", "-q"], input=data, capture_output=True,
                          timeout=120, check=False)
    if proc.returncode != 0 and not proc.stdout:
        detail = proc.stderr.decode(errors="replace").strip()
        raise ImageError(f"{codec} could not unpack the image: {detail}")
    return proc.stdout
