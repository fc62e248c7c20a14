"""Reading files out of initramfs images: concatenated cpio archives, compressed or not."""

from __future__ import annotations

import shutil

import pytest

from vfiod.host.initramfs_image import ImageError, read_members

from initramfs_images import compress, image, newc

SHIM = "usr/lib/vfiod/early-boot.sh"


@pytest.mark.parametrize("codec", ["none", "gzip", "xz", "zstd", "lz4"])
def test_the_shim_is_found_behind_the_microcode_archive(codec: str) -> None:
    if codec in ("zstd", "lz4") and shutil.which(codec) is None:
        pytest.fail(f"{codec} is missing: run `make setup`")
    data = image({".": b"", "./usr": b"", f"./{SHIM}": b"#!/bin/sh\nclaim\n"}, codec)
    assert read_members(data, ["/" + SHIM]) == {SHIM: b"#!/bin/sh\nclaim\n"}


def test_an_image_without_the_shim_has_no_such_member() -> None:
    assert read_members(image({"./init": b"#!/bin/sh\n"}), [SHIM]) == {}


def test_a_later_archive_wins_as_when_the_kernel_unpacks() -> None:
    data = newc({SHIM: b"old"}) + compress(newc({SHIM: b"new"}), "gzip")
    assert read_members(data, [SHIM]) == {SHIM: b"new"}


def test_a_truncated_archive_is_an_error_not_an_empty_answer() -> None:
    data = newc({SHIM: b"x" * 100})[:150]
    with pytest.raises(ImageError, match="past the end"):
        read_members(data, [SHIM])


def test_garbage_is_an_error() -> None:
    with pytest.raises(ImageError, match="unknown data"):
        read_members(b"this is no initramfs", [SHIM])
