"""Setting the guest up: the kernel package, vmlinux, the initramfs and its cache key."""

from __future__ import annotations

import lzma
import os
import struct
import subprocess
from pathlib import Path

import pytest

from . import initramfs
from .kernel import Kernel, STAMP, cached_kernels, extract_vmlinux, image_package, version_of

APT_CACHE_DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-57-amd64
"""


def elf64(*segment_types: int) -> bytes:
    """A minimal little-endian ELF64 header with the given program header types."""
    phoff, phentsize = 64, 56
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, phentsize, len(segment_types))
    table = b"".join(struct.pack("<I", t) + bytes(phentsize - 4) for t in segment_types)
    return bytes(header) + table


def test_image_package_is_the_dependency_of_linux_image_amd64() -> None:
    assert image_package(APT_CACHE_DEPENDS) == "linux-image-6.1.0-57-amd64"
    assert version_of("linux-image-6.1.0-57-amd64") == "6.1.0-57-amd64"


def test_no_image_package_in_unrelated_output() -> None:
    assert image_package("E: No packages found\n") is None


def test_only_stamped_kernels_count_as_cached_newest_first(tmp_path: Path) -> None:
    for version, stamped in (("6.1.0-57-amd64", True), ("6.1.0-100-amd64", True),
                             ("6.1.0-200-amd64", False)):
        root = tmp_path / "kernel" / version
        root.mkdir(parents=True)
        if stamped:
            (root / STAMP).write_text("x\n")
    assert [k.version for k in cached_kernels(tmp_path)] == ["6.1.0-100-amd64", "6.1.0-57-amd64"]


def fake_kernel(tmp_path: Path, pvh: bool) -> Kernel:
    kernel = Kernel("6.1.0-1-amd64", tmp_path)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "config-6.1.0-1-amd64").write_text(
        "CONFIG_PVH=y\n" if pvh else "# CONFIG_PVH is not set\n")
    kernel.image.write_bytes(b"MZ setup code" + lzma.compress(elf64(1), format=lzma.FORMAT_XZ)
                             + b"trailer")
    return kernel


def test_vmlinux_is_unpacked_from_the_bzimage_when_the_kernel_has_pvh(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, pvh=True)
    extract_vmlinux(kernel)
    assert kernel.vmlinux.read_bytes() == elf64(1)
    assert kernel.boot_image == kernel.vmlinux


def test_bzimage_is_booted_when_the_kernel_lacks_pvh(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, pvh=False)
    extract_vmlinux(kernel)
    assert not kernel.vmlinux.exists()
    assert kernel.boot_image == kernel.image


def test_static_elf_has_no_interpreter(tmp_path: Path) -> None:
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    static.write_bytes(elf64(1, 1))
    dynamic.write_bytes(elf64(6, initramfs.PT_INTERP, 1))
    assert initramfs.is_static_elf(static)
    assert not initramfs.is_static_elf(dynamic)
    assert not initramfs.is_static_elf(tmp_path / "missing")


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """A static "busybox", two modules and a private copy of init.sh."""
    busybox = tmp_path / "busybox"
    busybox.write_bytes(elf64(1))
    modules = []
    for name in ("virtio.ko", "9p.ko"):
        ko = tmp_path / name
        ko.write_bytes(name.encode())
        modules.append(ko)
    init = tmp_path / "init.sh"
    init.write_text(initramfs.INIT_SCRIPT.read_text())
    monkeypatch.setattr(initramfs, "INIT_SCRIPT", init)
    monkeypatch.setattr(initramfs, "find_busybox", lambda: busybox)
    monkeypatch.setattr(initramfs, "module_files", lambda kernel: modules)
    return modules


def cpio_listing(image: Path) -> list[str]:
    return subprocess.run(["cpio", "-it", "--quiet"], input=image.read_bytes(),
                          capture_output=True, check=True).stdout.decode().split()


def test_initramfs_holds_init_busybox_and_the_modules_in_load_order(
        tmp_path: Path, fake_parts: list[Path]) -> None:
    image = initramfs.ensure_initramfs(tmp_path / "cache", Kernel("6.1.0-1-amd64", tmp_path))
    assert {"init", "bin/busybox", "modules/virtio.ko", "modules/9p.ko",
            "modules/order"} <= set(cpio_listing(image))
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=image.read_bytes(), cwd=unpacked,
                   check=True)
    assert (unpacked / "modules" / "order").read_text() == "virtio.ko\n9p.ko\n"
    assert os.access(unpacked / "init", os.X_OK)


def test_a_second_setup_reuses_the_initramfs(tmp_path: Path, fake_parts: list[Path]) -> None:
    kernel = Kernel("6.1.0-1-amd64", tmp_path)
    first = initramfs.ensure_initramfs(tmp_path / "cache", kernel)
    built = first.stat().st_mtime_ns
    again = initramfs.ensure_initramfs(tmp_path / "cache", kernel)
    assert again == first and again.stat().st_mtime_ns == built


def test_a_changed_init_script_builds_a_new_initramfs_and_drops_the_old(
        tmp_path: Path, fake_parts: list[Path]) -> None:
    kernel = Kernel("6.1.0-1-amd64", tmp_path)
    first = initramfs.ensure_initramfs(tmp_path / "cache", kernel)
    initramfs.INIT_SCRIPT.write_text(initramfs.INIT_SCRIPT.read_text() + "# changed\n")
    second = initramfs.ensure_initramfs(tmp_path / "cache", kernel)
    assert second != first
    assert second.name.startswith("initramfs-6.1.0-1-amd64-")
    assert not first.exists()
