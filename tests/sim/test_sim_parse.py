"""The kernel's parsing of sysfs writes."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfiod.sim.parse import kstrtoul, sscanf_hex, sysfs_streq


@pytest.mark.parametrize(("a", "b", "equal"), [
    ("0000:06:00.0", "0000:06:00.0\n", True),
    ("0000:06:00.0", "0000:06:00.0", True),
    ("0000:06:00.0", "0000:06:00.0\n\n", False),
    ("0000:06:00.0", "0000:06:00.0 ", False),
    ("0000:06:00.0", "06:00.0", False),
    ("default", "default\0junk", True),
])
def test_sysfs_streq_ignores_one_trailing_newline(a: str, b: str, equal: bool) -> None:
    assert sysfs_streq(a, b) is equal


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_kstrtoul_reads_decimal_hex_and_octal(n: int) -> None:
    assert kstrtoul(f"{n}\n") == n
    assert kstrtoul(hex(n)) == n
    assert kstrtoul("0" + oct(n)[2:]) == n


@pytest.mark.parametrize("text", ["", " 1", "1 ", "1\n\n", "x", "0x", "09", "-1"])
def test_kstrtoul_refuses_anything_else_with_einval(text: str) -> None:
    with pytest.raises(OSError) as bad:
        kstrtoul(text)
    assert bad.value.errno == errno.EINVAL


def test_kstrtoul_above_64_bits_is_erange() -> None:
    with pytest.raises(OSError) as bad:
        kstrtoul(str(2**64))
    assert bad.value.errno == errno.ERANGE


@pytest.mark.parametrize(("text", "fields"), [
    ("10de 1b06", [0x10DE, 0x1B06]),
    ("0x10de 0x1b06 ffffffff ffffffff 30000 ffff00\n", [0x10DE, 0x1B06, 0xFFFFFFFF,
                                                        0xFFFFFFFF, 0x30000, 0xFFFF00]),
    ("10de:1b06", [0x10DE]),
    ("garbage", []),
])
def test_sscanf_hex_stops_at_first_mismatch(text: str, fields: list[int]) -> None:
    assert sscanf_hex(text, 7) == fields
