"""mountinfo lines as the kernel writes them (proc(5)), read by device number."""

from __future__ import annotations

from vfiod.block_claims import Mount, parse_mountinfo


def test_optional_fields_and_escapes_are_read_by_position() -> None:
    text = ("36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:7 - ext3 "
            "/dev/root rw,errors=continue\n"
            "40 1 0:45 / /data rw,relatime - btrfs /dev/sdc rw,space_cache=v2\n")
    assert parse_mountinfo(text) == [
        Mount("98:0", "/mnt/with space", "ext3", "/dev/root"),
        Mount("0:45", "/data", "btrfs", "/dev/sdc"),
    ]


def test_a_line_without_the_separator_is_skipped() -> None:
    assert parse_mountinfo("36 35 98:0 / /mnt rw\n") == []
