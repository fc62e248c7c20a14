"""Options (a{sv}) and error messages as clients send and receive them."""

from __future__ import annotations

import pytest
from dbus_fast import Variant

from vfiod.daemon.service import BIND_OPTIONS, RESET_OPTIONS, UNBIND_OPTIONS, one_line, parse_options
from vfiod.errors import InvalidArgument


def test_bind_options_are_returned_as_plain_values() -> None:
    opts = {"group": Variant("b", False), "force": Variant("b", True)}
    assert parse_options(opts, BIND_OPTIONS, "Bind") == {"group": False, "force": True}


def test_no_options_are_no_values() -> None:
    assert parse_options({}, UNBIND_OPTIONS, "Unbind") == {}


def test_force_is_unknown_to_unbind() -> None:
    with pytest.raises(InvalidArgument, match="unknown option 'force'; accepted options: group"):
        parse_options({"force": Variant("b", True)}, UNBIND_OPTIONS, "Unbind")


def test_option_of_another_type_names_the_type_wanted() -> None:
    with pytest.raises(InvalidArgument, match="'force' must be a boolean"):
        parse_options({"force": Variant("s", "yes")}, RESET_OPTIONS, "Reset")


def test_a_huge_unknown_key_is_quoted_short_and_printable() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_options({"\x1b[31m" + "k" * 10_000: Variant("b", True)}, BIND_OPTIONS, "Bind")
    assert len(str(err.value)) < 200
    assert "\x1b" not in str(err.value)


def test_messages_cross_the_bus_as_one_line() -> None:
    assert one_line("first\n  second\tthird ") == "first second third"


def test_messages_cross_the_bus_with_control_characters_escaped() -> None:
    assert one_line("/dev/sdb1 is mounted on /mnt/\x1b]0;x\x07") == (
        "/dev/sdb1 is mounted on /mnt/\\x1b]0;x\\x07")


def test_every_operation_takes_wait_in_seconds() -> None:
    for accepted, method in ((BIND_OPTIONS, "Bind"), (UNBIND_OPTIONS, "Unbind"),
                             (RESET_OPTIONS, "Reset")):
        assert parse_options({"wait": Variant("u", 30)}, accepted, method) == {"wait": 30}


def test_wait_of_another_type_names_the_type_wanted() -> None:
    with pytest.raises(InvalidArgument, match="'wait' must be an unsigned integer \\(u\\)"):
        parse_options({"wait": Variant("i", 30)}, BIND_OPTIONS, "Bind")
