"""The config file: what it accepts, how it points at what is wrong, how it matches."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiod.config import (MAX_CONFIG_BYTES, Config, ConfigError, DeviceEntry,
                          boot_conflicts, check_boot_groups, load_config, parse_config,
                          resolve_name)
from vfiod.errors import InvalidArgument, NoSuchDevice
from vfiod.model import PciDevice

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
# the guest's devices
[[device]]
match = "06:00.0"
name = "gpu"
boot = "vfio"
on_release = "reset"

[[device]]
match = "10DE:10EF@0000:06:00.1"

[[device]]
match = "8086:8d20"
name = "audio"
"""


def device(address: str, ids: str, group: int | None = None) -> PciDevice:
    vendor, dev = (int(x, 16) for x in ids.split(":"))
    return PciDevice(address=address, vendor=vendor, device=dev, subsystem_vendor=0,
                     subsystem_device=0, class_code=0x030000, name="", driver=None,
                     driver_override=None, iommu_group=group, boot_vga=False,
                     reset_methods=(), modalias="", sysfs_path=f"/devices/pci0000:00/{address}")


def error_of(text: str, filename: str = "vfiod.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, filename)
    return str(info.value)


# -- what it accepts -------------------------------------------------------------------

def test_short_address_becomes_the_full_address() -> None:
    config = parse_config(GOOD)
    assert config.devices[0].match == "0000:06:00.0"
    assert config.devices[0].address == "0000:06:00.0"
    assert config.devices[0].ids is None


def test_ids_at_address_is_normalised_to_lower_case_and_keeps_both_parts() -> None:
    entry = parse_config(GOOD).devices[1]
    assert entry.match == "10de:10ef@0000:06:00.1"
    assert entry.address == "0000:06:00.1"
    assert entry.ids == (0x10DE, 0x10EF)


def test_ids_only_entry_has_no_address() -> None:
    entry = parse_config(GOOD).devices[2]
    assert entry.address is None
    assert entry.ids == (0x8086, 0x8D20)


def test_boot_defaults_to_host_and_on_release_to_keep() -> None:
    entry = parse_config(GOOD).devices[1]
    assert (entry.boot, entry.on_release, entry.name) == ("host", "keep", None)


def test_values_given_are_kept() -> None:
    entry = parse_config(GOOD).devices[0]
    assert (entry.name, entry.boot, entry.on_release) == ("gpu", "vfio", "reset")


def test_empty_text_is_an_empty_config() -> None:
    assert parse_config("").devices == []
    assert parse_config("# nothing yet\n\n").devices == []


def test_absent_file_is_an_empty_config(tmp_path: Path) -> None:
    config = load_config(tmp_path / "missing.toml")
    assert config.devices == []


def test_load_config_reads_the_file_and_remembers_its_path(tmp_path: Path) -> None:
    path = tmp_path / "vfiod.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert [e.name for e in config.devices] == ["gpu", None, "audio"]
    assert config.path == str(path)


def test_shipped_example_is_valid_as_is_and_once_uncommented() -> None:
    text = (REPO / "etc" / "vfiod.toml").read_text()
    assert parse_config(text).devices == []
    uncommented = "\n".join(re.sub(r"^# ?", "", line)
                            if re.match(r"^# (\[\[|\[\w+\]|\w+ = )", line)
                            else line for line in text.splitlines())
    config = parse_config(uncommented)
    assert [e.name for e in config.devices] == ["gpu", "usb", "audio", "ssata"]
    assert config.devices[0].match == "10de:1b06@0000:06:00.0"
    assert config.handover_timeout == 10.0


# -- what it refuses, and where it points ------------------------------------------------

def test_bad_boot_value_names_file_line_and_field() -> None:
    text = GOOD + '\n[[device]]\nmatch = "09:00.0"\nboot = "guest"\n'
    assert error_of(text) == ("vfiod.toml:17: device[3].boot: 'guest' is not allowed "
                              "(expected 'vfio' or 'host')")


def test_bad_on_release_value_points_at_its_line() -> None:
    text = '[[device]]\nmatch = "09:00.0"\n\non_release = "destroy"\n'
    assert error_of(text).startswith("vfiod.toml:4: device[0].on_release: 'destroy'")


def test_unknown_key_in_a_device_is_refused_with_its_line() -> None:
    text = '[[device]]\nmatch = "09:00.0"\nbot = "vfio"\n'
    assert error_of(text) == ("vfiod.toml:3: device[0].bot: unknown key (expected one of: "
                              "match, name, boot, on_release)")


def test_unknown_top_level_key_is_refused() -> None:
    text = 'devices = 1\n' + GOOD
    assert error_of(text).startswith("vfiod.toml:1: devices: unknown key")


def test_missing_match_points_at_the_table_header() -> None:
    text = GOOD + '\n[[device]]\nname = "usb"\n'
    assert error_of(text).startswith("vfiod.toml:15: device[3].match: missing")


def test_malformed_match_is_refused() -> None:
    message = error_of('[[device]]\nmatch = "../../x"\n')
    assert message.startswith("vfiod.toml:2: device[0].match: '../../x' is not a PCI address")


def test_match_of_the_wrong_type_is_refused() -> None:
    assert error_of('[[device]]\nmatch = 6\n') == "vfiod.toml:2: device[0].match: must be a string"


def test_duplicate_names_are_refused_naming_the_first_one() -> None:
    text = GOOD + '\n[[device]]\nmatch = "09:00.0"\nname = "gpu"\n'
    assert error_of(text) == ("vfiod.toml:17: device[3].name: 'gpu' is already the name of "
                              "device[0]; names must be unique")


def test_a_name_that_looks_like_an_address_is_refused() -> None:
    message = error_of('[[device]]\nmatch = "09:00.0"\nname = "0000:06:00.0"\n')
    assert "device[0].name: '0000:06:00.0' looks like an address" in message


def test_a_name_with_path_characters_is_refused() -> None:
    message = error_of('[[device]]\nmatch = "09:00.0"\nname = "../gpu"\n')
    assert "device[0].name: '../gpu' is not a valid name" in message


def test_the_same_device_twice_is_refused() -> None:
    text = '[[device]]\nmatch = "06:00.0"\n[[device]]\nmatch = "0000:06:00.0"\n'
    assert error_of(text) == ("vfiod.toml:4: device[1].match: 0000:06:00.0 is already "
                              "matched by device[0]")


def test_quarantine_after_defaults_to_three() -> None:
    assert parse_config(GOOD).quarantine_after == 3


def test_quarantine_after_is_read_from_the_daemon_table() -> None:
    assert parse_config("[daemon]\nquarantine_after = 0\n\n" + GOOD).quarantine_after == 0


def test_a_bad_quarantine_after_names_its_line_and_field() -> None:
    message = error_of(GOOD + "\n[daemon]\n# failed resets in a row\nquarantine_after = -2\n")
    assert message.startswith("vfiod.toml:17: daemon.quarantine_after: must be a whole "
                              "number from 0 (never) to 1000")


def test_an_unknown_key_in_the_daemon_table_is_refused_with_its_line() -> None:
    assert error_of("[daemon]\nquarantine = 3\n").startswith(
        "vfiod.toml:2: daemon.quarantine: unknown key (expected one of: quarantine_after)")


def test_toml_syntax_error_carries_tomllibs_line() -> None:
    text = GOOD + '\n[[device]]\nmatch = "09:00.0\n'
    message = error_of(text)
    assert message.startswith("vfiod.toml:16: TOML syntax: ")


def test_device_written_as_a_plain_table_is_refused() -> None:
    message = error_of('[device]\nmatch = "06:00.0"\n')
    assert message == ("vfiod.toml:1: device: must be an array of tables: write each device "
                       "as [[device]]")


def test_inline_array_of_tables_is_accepted_and_checked() -> None:
    config = parse_config('device = [{ match = "06:00.0", boot = "vfio" }]\n')
    assert config.devices[0].boot == "vfio"
    assert error_of('device = [{ match = "06:00.0", boot = "x" }]\n').startswith(
        "vfiod.toml:1: device[0].boot:")


def test_non_utf8_file_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "vfiod.toml"
    path.write_bytes(b'[[device]]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2: not valid UTF-8"


def test_an_array_nested_3000_deep_is_a_config_error_at_its_line() -> None:
    text = GOOD + "\nx = " + "[" * 3000 + "]" * 3000 + "\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "vfiod.toml")
    assert str(info.value).startswith(f"vfiod.toml:{GOOD.count(chr(10)) + 2}: ")
    assert "nested more than" in str(info.value)


def test_inline_tables_nested_3000_deep_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^vfiod\.toml:1: .*nested"):
        parse_config("x = " + "{a = " * 3000, "vfiod.toml")


def test_brackets_in_a_comment_are_no_nesting() -> None:
    text = '[[device]]\nmatch = "06:00.0"  # ' + "[" * 100 + '\nname = "gpu"\n'
    assert parse_config(text).devices[0].name == "gpu"


def test_brackets_in_a_string_are_no_nesting() -> None:
    with pytest.raises(ConfigError, match=r"^vfiod\.toml:1: x: unknown key"):
        parse_config('x = "' + "[" * 100 + '"\n', "vfiod.toml")


def test_an_integer_too_long_to_convert_is_a_config_error_at_its_line() -> None:
    with pytest.raises(ConfigError, match=r"^vfiod\.toml:2: TOML syntax: "):
        parse_config("\nx = 1" + "0" * 5000 + "\n", "vfiod.toml")


def test_dev_zero_is_refused_unread() -> None:
    with pytest.raises(ConfigError, match=r"^/dev/zero: is a character device, not a regular"):
        load_config("/dev/zero")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "vfiod.toml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _capture(outcome, load_config, fifo), daemon=True)
    reader.start()
    reader.join(5.0)
    assert not reader.is_alive(), "load_config blocked on a FIFO"
    assert isinstance(outcome[0], ConfigError)
    assert str(outcome[0]) == f"{fifo}: is a FIFO, not a regular file: refused unread"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a regular file"):
        load_config(tmp_path)


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "vfiod.toml"
    big.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="too large for a config file"):
        load_config(big)


def test_a_file_at_the_size_bound_is_read(tmp_path: Path) -> None:
    body = GOOD.encode()
    path = tmp_path / "vfiod.toml"
    path.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body)))
    assert len(load_config(path).devices) == 3


def _capture(outcome: list[BaseException], func: Callable[..., object], *args: object) -> None:
    try:
        func(*args)
    except BaseException as exc:  # handed to the test's thread
        outcome.append(exc)


def test_config_error_reaches_dbus_as_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_config('[[device]]\nboot = "vfio"\n')
    assert info.value.dbus_name == "org.vfiod1.Error.InvalidArgument"
    assert info.value.line == 1 and info.value.field == "device[0].match"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_either_parses_or_raises_config_error(text: str) -> None:
    try:
        config = parse_config(text, "vfiod.toml")
    except ConfigError as exc:
        assert str(exc).startswith("vfiod.toml")
        assert "\n" not in str(exc).strip()
    else:
        assert isinstance(config, Config)


# -- matching ----------------------------------------------------------------------------

def test_entry_for_prefers_an_address_match_over_an_ids_match() -> None:
    config = parse_config('[[device]]\nmatch = "10de:1b06"\nname = "any"\n'
                          '[[device]]\nmatch = "06:00.0"\nname = "gpu"\n')
    entry = config.entry_for(device("0000:06:00.0", "10de:1b06"))
    assert entry is not None and entry.name == "gpu"


def test_entry_for_falls_back_to_an_ids_match() -> None:
    config = parse_config('[[device]]\nmatch = "10de:1b06"\nname = "any"\n'
                          '[[device]]\nmatch = "06:00.0"\nname = "gpu"\n')
    entry = config.entry_for(device("0000:09:00.0", "10de:1b06"))
    assert entry is not None and entry.name == "any"


def test_ids_at_address_does_not_match_another_card_at_that_address() -> None:
    config = parse_config('[[device]]\nmatch = "10de:1b06@06:00.0"\n')
    assert config.entry_for(device("0000:06:00.0", "1002:67df")) is None
    assert Config.match(config.devices[0], device("0000:06:00.0", "10de:1b06"))


FUNCTIONS = [("0000:00:1b.0", 0x8086, 0x8d20), ("0000:06:00.0", 0x10de, 0x1b06),
             ("0000:09:00.0", 0x10de, 0x1b06)]


def test_a_name_of_an_address_entry_resolves_to_that_function() -> None:
    assert resolve_name(parse_config(GOOD), "gpu", FUNCTIONS) == "0000:06:00.0"


def test_a_name_of_an_ids_entry_resolves_to_the_one_function_with_those_ids() -> None:
    assert resolve_name(parse_config(GOOD), "audio", FUNCTIONS) == "0000:00:1b.0"


def test_a_name_whose_entry_matches_nothing_is_no_such_device() -> None:
    with pytest.raises(NoSuchDevice, match="gpu: no PCI device matches"):
        resolve_name(parse_config(GOOD), "gpu", FUNCTIONS[:1])


def test_a_name_whose_entry_matches_two_functions_is_invalid() -> None:
    config = parse_config('[[device]]\nmatch = "10de:1b06"\nname = "gpus"\n')
    with pytest.raises(InvalidArgument, match="matches 2 devices"):
        resolve_name(config, "gpus", FUNCTIONS)


def test_a_name_no_entry_has_is_invalid_and_names_the_file() -> None:
    with pytest.raises(InvalidArgument, match="device name from /x.toml"):
        resolve_name(parse_config(GOOD), "nope", FUNCTIONS, where="/x.toml")


def test_devices_for_resolves_an_ids_entry_against_the_device_list() -> None:
    config = parse_config(GOOD)
    devices = [device("0000:00:1b.0", "8086:8d20"), device("0000:06:00.0", "10de:1b06")]
    audio = config.entry_named("audio")
    assert audio is not None
    assert [d.address for d in config.devices_for(audio, devices)] == ["0000:00:1b.0"]


def test_entries_are_frozen() -> None:
    entry = parse_config(GOOD).devices[0]
    with pytest.raises(Exception):
        entry.boot = "host"  # type: ignore[misc]
    assert isinstance(entry, DeviceEntry)


# -- against the machine: boot values inside one IOMMU group ----------------------------

GROUP_31 = [device("0000:06:00.0", "10de:1b06", 31), device("0000:06:00.1", "10de:10ef", 31)]
CONFLICT = """\
[[device]]
match = "0000:06:00.0"
name = "gpu"
boot = "vfio"

[[device]]
match = "10de:10ef"
name = "gpu-audio"
boot = "host"
"""


def boot_error(text: str, devices: list[PciDevice]) -> str:
    with pytest.raises(ConfigError) as info:
        check_boot_groups(parse_config(text, "vfiod.toml"), devices)
    return str(info.value)


def test_boot_vfio_and_boot_host_in_one_group_is_an_error_at_the_host_line() -> None:
    message = boot_error(CONFLICT, GROUP_31)
    assert message.startswith('vfiod.toml:9: device[1].boot: "host" for gpu-audio '
                              "(0000:06:00.1) conflicts with boot = \"vfio\" of device[0] "
                              "(gpu, 0000:06:00.0, line 4)")
    assert "IOMMU group 31" in message


def test_the_conflict_error_is_an_invalid_argument_with_its_line_and_field() -> None:
    with pytest.raises(ConfigError) as info:
        check_boot_groups(parse_config(CONFLICT, "vfiod.toml"), GROUP_31)
    assert (info.value.line, info.value.field) == (9, "device[1].boot")
    assert isinstance(info.value, InvalidArgument)


def test_an_entry_without_boot_follows_its_group() -> None:
    text = CONFLICT.replace('boot = "host"\n', "")
    check_boot_groups(parse_config(text), GROUP_31)
    assert boot_conflicts(parse_config(text), GROUP_31) == []


def test_the_same_boot_on_every_member_is_no_conflict() -> None:
    text = CONFLICT.replace('boot = "host"', 'boot = "vfio"')
    assert boot_conflicts(parse_config(text), GROUP_31) == []


def test_boot_values_in_different_groups_never_conflict() -> None:
    apart = [device("0000:06:00.0", "10de:1b06", 31), device("0000:06:00.1", "10de:10ef", 32)]
    assert boot_conflicts(parse_config(CONFLICT), apart) == []


def test_without_iommu_groups_nothing_conflicts() -> None:
    no_iommu = [device("0000:06:00.0", "10de:1b06"), device("0000:06:00.1", "10de:10ef")]
    assert boot_conflicts(parse_config(CONFLICT), no_iommu) == []


def test_every_conflicting_group_is_reported_in_group_order() -> None:
    text = CONFLICT + '\n[[device]]\nmatch = "0000:09:00.0"\nboot = "host"\n' \
                      '\n[[device]]\nmatch = "0000:09:00.1"\nboot = "vfio"\n'
    machine = [*GROUP_31, device("0000:09:00.0", "10de:1b06", 32),
               device("0000:09:00.1", "10de:10ef", 32)]
    conflicts = boot_conflicts(parse_config(text), machine)
    assert [(c.group, c.vfio[2].address, c.host[2].address) for c in conflicts] == [
        (31, "0000:06:00.0", "0000:06:00.1"), (32, "0000:09:00.1", "0000:09:00.0")]


def test_parsing_remembers_the_line_of_each_key_and_table() -> None:
    config = parse_config(CONFLICT)
    assert config.line_of(1, "boot") == 9
    assert config.line_of(1) == 6
    assert config.line_of(1, "on_release") == 6  # not written: its table's line
    assert config.line_of(5) is None
