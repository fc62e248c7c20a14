"""The D-Bus error names vfiod sends map to vfioctl's documented exit codes."""

from __future__ import annotations

import pytest

from vfiod.ctl import exitcodes
from vfiod.errors import ALL_ERRORS, VfiodError


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_each_vfiod_error_name_gives_its_exit_code(cls: type[VfiodError]) -> None:
    assert exitcodes.exit_code_for(cls.dbus_name) == cls.exit_code


def test_exit_codes_are_distinct_apart_from_failed() -> None:
    codes = [cls.exit_code for cls in ALL_ERRORS]
    assert len(set(codes)) == len(codes)
    assert exitcodes.UNREACHABLE not in codes


def test_an_error_name_vfiod_does_not_define_is_failed() -> None:
    assert exitcodes.exit_code_for("org.example.Whatever") == exitcodes.FAILED
    assert exitcodes.exit_code_for("org.freedesktop.DBus.Error.InvalidArgs") == \
        exitcodes.FAILED


@pytest.mark.parametrize("name", ["org.freedesktop.DBus.Error.ServiceUnknown",
                                  "org.freedesktop.DBus.Error.NameHasNoOwner",
                                  "org.freedesktop.DBus.Error.NoReply"])
def test_nobody_owning_the_name_means_vfiod_is_unreachable(name: str) -> None:
    assert exitcodes.exit_code_for(name) == exitcodes.UNREACHABLE
