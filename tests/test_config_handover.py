"""The config's [handover] table: how long a forced bind waits for the desktop."""

from __future__ import annotations

import pytest

from vfiod.config import ConfigError, parse_config

DEVICE = '[[device]]\nmatch = "06:00.0"\nname = "gpu"\n'


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "vfiod.toml")
    return str(info.value)


def test_a_file_without_the_table_waits_ten_seconds() -> None:
    assert parse_config(DEVICE, "vfiod.toml").handover_timeout == 10.0


def test_the_timeout_is_read_in_seconds_beside_the_devices() -> None:
    config = parse_config(DEVICE + "\n[handover]\ntimeout = 3\n", "vfiod.toml")
    assert config.handover_timeout == 3.0 and config.devices[0].name == "gpu"


def test_zero_asks_and_does_not_wait() -> None:
    assert parse_config("[handover]\ntimeout = 0\n", "vfiod.toml").handover_timeout == 0.0


def test_a_timeout_past_two_minutes_is_refused_with_its_line() -> None:
    assert error_of(DEVICE + "[handover]\ntimeout = 600\n") == (
        "vfiod.toml:4: handover.timeout: 600 is not a number of seconds from 0 to 120")


def test_a_timeout_that_is_not_a_number_is_refused() -> None:
    assert "handover.timeout: 'ten'" in error_of('[handover]\ntimeout = "ten"\n')


def test_a_boolean_timeout_is_refused() -> None:
    assert "handover.timeout: True" in error_of("[handover]\ntimeout = true\n")


def test_an_unknown_key_in_the_table_is_refused() -> None:
    assert error_of("[handover]\nwait = 3\n") == (
        "vfiod.toml:1: handover.wait: unknown key (expected one of: timeout)")


def test_handover_that_is_not_a_table_is_refused() -> None:
    assert "handover: must be a table" in error_of("handover = 3\n")
