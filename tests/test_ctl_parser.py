"""vfioctl's command line: commands, options, usage errors and the documented exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vfiod.ctl import exitcodes
from vfiod.ctl.parser import build_parser, parse_args
from vfiod.errors import ALL_ERRORS


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Parse *argv*, expect exit status 2, return the last stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == exitcodes.USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_status_takes_an_optional_device_and_json() -> None:
    args = parse_args(["status"])
    assert (args.command, args.device, args.json) == ("status", None, False)
    args = parse_args(["status", "06:00.0", "--json"])
    assert (args.device, args.json) == ("06:00.0", True)


def test_status_fits_the_terminal_unless_full_is_given() -> None:
    assert not parse_args(["status"]).full
    assert parse_args(["status", "--full"]).full
    assert parse_args(["status", "-l"]).full


def test_bind_moves_the_group_without_force_by_default() -> None:
    args = parse_args(["bind", "gpu"])
    assert (args.device, args.no_group, args.force) == ("gpu", False, False)


def test_bind_accepts_no_group_and_force() -> None:
    args = parse_args(["bind", "0000:06:00.0", "--no-group", "--force"])
    assert (args.no_group, args.force) == (True, True)


def test_unbind_accepts_no_group_but_not_force(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["unbind", "06:00.0", "--no-group"]).no_group is True
    assert "unrecognized arguments: --force" in usage_error(
        ["unbind", "06:00.0", "--force"], capsys)


def test_bus_options_come_before_the_command() -> None:
    args = parse_args(["--address", "unix:path=/tmp/bus", "reset", "06:00.0"])
    assert (args.address, args.session, args.command) == ("unix:path=/tmp/bus", False,
                                                          "reset")
    assert parse_args(["--session", "monitor", "--json"]).session is True


def test_session_and_address_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(["--session", "--address", "unix:path=/x", "status"], capsys)
    assert line.startswith("vfioctl: argument --address: not allowed with")


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error([], capsys).startswith("vfioctl: a command is needed")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice: 'frobnicate'" in usage_error(["frobnicate"], capsys)


def test_bind_without_device_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "DEVICE" in usage_error(["bind"], capsys)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_timeout_must_be_a_positive_number(value: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert "--timeout" in usage_error(["--timeout", value, "status"], capsys)


def test_initramfs_and_libvirt_hook_need_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert "an action is needed" in usage_error(["initramfs"], capsys)
    assert "an action is needed" in usage_error(["libvirt-hook"], capsys)


def test_doctor_takes_a_simulated_profile() -> None:
    args = parse_args(["doctor", "--simulate", "seed-x99", "--json"])
    assert (args.simulate, args.json) == ("seed-x99", True)


def test_help_documents_every_exit_code() -> None:
    text = build_parser().format_help()
    epilog = text[text.index("exit status:"):]
    for cls in ALL_ERRORS:
        assert f"{cls.exit_code:>5}  " in epilog, cls.__name__
        assert cls.dbus_name in epilog
    assert f"{exitcodes.UNREACHABLE:>5}  cannot reach vfiod" in epilog


def imported_modules(*argv: str) -> set[str]:
    """The modules ``python -X importtime -m vfiod.ctl.main ARGV`` imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "vfiod.ctl.main",
                           *argv], capture_output=True, text=True, timeout=60,
                          env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus",
                               "PATH": "/usr/bin:/bin"})
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_help_imports_no_dbus_library_and_no_engine() -> None:
    modules = imported_modules("--help")
    assert "argparse" in modules  # the measurement itself works
    for heavy in ("dbus_fast", "asyncio", "pydantic", "pyudev", "vfiod.engine"):
        assert heavy not in modules, heavy


def test_status_imports_neither_pydantic_nor_pyudev_nor_the_engine() -> None:
    modules = imported_modules("status")
    assert "vfiod.ctl.wire" in modules  # it did get as far as connecting
    for heavy in ("pydantic", "pyudev", "vfiod.engine", "vfiod.records", "vfiod.sim",
                  "dbus_fast", "asyncio"):  # its blocking client needs neither of the two
        assert heavy not in modules, heavy
