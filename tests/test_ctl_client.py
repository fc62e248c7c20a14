"""The D-Bus client's error handling: every reply becomes one line and an exit code."""

from __future__ import annotations

import pytest
from dbus_fast import Message, MessageType

from vfiod.ctl import exitcodes
from vfiod.ctl.client import VfiodClient, device_path
from vfiod.ctl.exitcodes import CtlError
from vfiod.ctl.commands import about, device_argument
from vfiod.errors import InUse, NoSuchDevice


def error_reply(name: str, text: str | None) -> Message:
    body = [text] if text is not None else []
    return Message(message_type=MessageType.ERROR, error_name=name, reply_serial=2,
                   signature="s" if body else "", body=body)


def client() -> VfiodClient:
    return VfiodClient(bus=None, where="the system bus")  # type: ignore[arg-type]


def test_a_vfiod_error_keeps_its_message_and_exit_code() -> None:
    err = client()._error(error_reply(InUse.dbus_name, "0000:00:1f.2: holds / (sda2)"),
                          "org.vfiod1")
    assert (err.message, err.exit_code, err.dbus_name) == \
        ("0000:00:1f.2: holds / (sda2)", InUse.exit_code, InUse.dbus_name)


def test_a_multi_line_message_becomes_one_line() -> None:
    err = client()._error(error_reply("org.vfiod1.Error.Failed", "first\n  second\n"),
                          "org.vfiod1")
    assert err.message == "first second"


def test_an_error_without_text_shows_its_name() -> None:
    err = client()._error(error_reply(NoSuchDevice.dbus_name, None), "org.vfiod1")
    assert err.message == NoSuchDevice.dbus_name and err.exit_code == 3


def test_service_unknown_says_vfiod_is_not_running() -> None:
    err = client()._error(error_reply("org.freedesktop.DBus.Error.ServiceUnknown",
                                      "The name org.vfiod1 was not provided by any "
                                      ".service files"), "org.vfiod1")
    assert err.exit_code == exitcodes.UNREACHABLE
    assert err.message.startswith("cannot reach vfiod on the system bus: The name")
    assert err.message.endswith("(is vfiod running?)")


def test_access_denied_is_exit_8() -> None:
    err = client()._error(error_reply("org.freedesktop.DBus.Error.AccessDenied",
                                      "not authorized"), "org.vfiod1")
    assert err.exit_code == 8


def test_errors_are_prefixed_with_the_device_once() -> None:
    plain = CtlError("refusing: the root filesystem is on it", 4)
    assert about("0000:00:1f.2", plain).message == \
        "0000:00:1f.2: refusing: the root filesystem is on it"
    named = CtlError("0000:00:1f.2: refusing", 4)
    assert about("0000:00:1f.2", named).message == "0000:00:1f.2: refusing"
    quoted = CtlError("'gpu' is neither a PCI address nor a device name", 2)
    assert about("gpu", quoted).message == quoted.message


def test_a_cannot_reach_error_gets_no_device_prefix() -> None:
    err = CtlError("cannot reach vfiod on the system bus: gone", exitcodes.UNREACHABLE)
    assert about("0000:06:00.0", err).message == err.message


def test_short_addresses_are_made_full_before_any_call() -> None:
    assert device_argument("06:00.0") == "0000:06:00.0"
    assert device_argument("gpu") == "gpu"


@pytest.mark.parametrize("bad", ["../../x", "", "0000:06:00.8", "x" * 200, "gpu;rm"])
def test_malformed_devices_are_usage_errors(bad: str) -> None:
    with pytest.raises(CtlError) as info:
        device_argument(bad)
    assert info.value.exit_code == exitcodes.USAGE
    assert "\n" not in info.value.message


def test_device_paths_follow_design() -> None:
    assert device_path("0000:06:00.0") == "/org/vfiod1/device/pci_0000_06_00_0"
