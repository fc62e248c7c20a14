"""vfioctl's entry point: every failure is one "vfioctl:" line and a documented code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vfiod.ctl import commands, exitcodes, main as main_module
from vfiod.ctl.main import main


@pytest.fixture
def no_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A system bus address where nothing listens."""
    address = f"unix:path={tmp_path}/no_bus_socket"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    return address


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_no_bus_is_exit_9_naming_the_socket(no_bus: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == exitcodes.UNREACHABLE
    line = one_error_line(capsys)
    assert line == (f"vfioctl: cannot reach vfiod on the system bus: {no_bus}: No such file "
                    "or directory (is vfiod running?)")


def test_a_malformed_device_fails_before_connecting(no_bus: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bind", "../../x"]) == exitcodes.USAGE
    assert one_error_line(capsys).startswith("vfioctl: '../../x' is not a device")


def test_a_bad_bus_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--address", "nonsense", "status"]) == exitcodes.USAGE
    assert one_error_line(capsys).startswith("vfioctl: --address nonsense: not a D-Bus "
                                             "address")


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(main_module, "run", interrupted)
    assert main(["bind", "06:00.0"]) == exitcodes.INTERRUPTED
    assert one_error_line(capsys) == ("vfioctl: interrupted; vfiod finishes what it "
                                      "started (see vfioctl status)")


def test_a_bug_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.delenv("VFIOCTL_DEBUG", raising=False)
    monkeypatch.setattr(main_module, "run", broken)
    assert main(["status"]) == exitcodes.FAILED
    assert one_error_line(capsys).startswith(
        "vfioctl: unexpected error: ZeroDivisionError: division by zero")


def test_vfioctl_debug_shows_the_traceback_of_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setenv("VFIOCTL_DEBUG", "1")
    monkeypatch.setattr(main_module, "run", broken)
    with pytest.raises(ZeroDivisionError):
        main(["status"])


def test_status_width_is_whole_into_a_pipe_without_columns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert commands.status_width(full=False) is None


def test_status_width_follows_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert commands.status_width(full=False) == 100
    assert commands.status_width(full=True) is None


def test_an_error_line_shows_control_characters_escaped(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main_module.fail("held by \x1b]0;pwned\x07 (pid 4)", 4) == 4
    assert capsys.readouterr().err == "vfioctl: held by \\x1b]0;pwned\\x07 (pid 4)\n"
