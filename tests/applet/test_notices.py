"""What the applet tells the user: transitions between device records, the notices
for them, which kinds the config lets through, and how a menu click calls vfiod."""

from __future__ import annotations

import asyncio
from typing import Any

from dbus_fast import Message, MessageFlag, MessageType

from vfiod.applet.app import Applet
from vfiod.applet.follower import transitions
from vfiod.applet.notifier import Notifier, notice_for, operation_notice
from vfiod.applet.settings import AppletSettings, parse_settings
from vfiod.ctl.devices import DeviceProperties

GPU = "0000:06:00.0"


def gpu(state: str, holder: str = "", **fields: Any) -> DeviceProperties:
    dev = DeviceProperties(GPU, name="GP102", state=state, driver="vfio-pci", holder=holder,
                           **fields)
    dev.extra["ConfigName"] = "gpu"
    return dev


def test_a_guest_taking_a_device_is_one_guest_took_naming_the_holder() -> None:
    [change] = transitions(gpu("vfio"), gpu("guest", "qemu-system-x86 (pid 9)"))
    assert change.kind == "guest_took"
    notice = notice_for(change)
    assert notice.summary == "gpu (0000:06:00.0) is in a guest"
    assert notice.body == "Held by qemu-system-x86 (pid 9)."


def test_a_guest_letting_go_is_device_back_with_where_it_is_now() -> None:
    [change] = transitions(gpu("guest", "qemu-system-x86 (pid 9)"), gpu("vfio"))
    assert change.kind == "device_back"
    assert notice_for(change).body == "Its guest let go; it is now on vfio-pci."


def test_a_failed_reset_is_a_critical_notice_that_says_what_to_do() -> None:
    [change] = transitions(gpu("vfio"), gpu("vfio", healthy=False))
    notice = notice_for(change)
    assert (change.kind, notice.urgency) == ("device_error", 2)
    assert "Try Reset again" in notice.body


def test_quarantine_says_to_power_cycle_if_resets_keep_failing() -> None:
    after = gpu("error")
    after.quarantined = True
    [change] = transitions(gpu("vfio"), after)
    assert "power the host off and on" in notice_for(change).body


def test_a_change_within_the_same_state_is_no_notice() -> None:
    assert transitions(gpu("vfio"), gpu("vfio", holder="")) == []


def test_operation_notice_carries_vfiods_error_message() -> None:
    notice = operation_notice("Bind", GPU, "0000:06:00.0 is in use by Xorg (pid 1)")
    assert notice.summary == "Bind 0000:06:00.0 failed"
    assert notice.body == "0000:06:00.0 is in use by Xorg (pid 1)"


class RecordingBus:
    """Stands in for a connected MessageBus: records calls, answers with *reply*."""

    def __init__(self, reply: Message | None = None) -> None:
        self.calls: list[Message] = []
        self.reply = reply

    async def call(self, msg: Message) -> Message:
        self.calls.append(msg)
        msg.serial = len(self.calls)
        return self.reply or Message.new_method_return(msg, "as", [[GPU]])


def test_a_turned_off_kind_is_not_sent() -> None:
    async def scenario() -> list[Message]:
        bus = RecordingBus()
        notifier = Notifier(bus, parse_settings(  # type: ignore[arg-type]
            "[notifications]\ndevice_back = false\n"))
        notifier.send(notice_for(transitions(gpu("guest", "q"), gpu("vfio"))[0]))
        notifier.send(operation_notice("Reset", GPU, None))
        await asyncio.sleep(0)
        return bus.calls
    [sent] = asyncio.run(scenario())
    assert sent.member == "Notify" and sent.body[3] == "Reset 0000:06:00.0: done"


def test_a_menu_click_calls_the_manager_allowing_interactive_authorization() -> None:
    async def scenario() -> tuple[list[Message], list[Message]]:
        vfiod_bus, tray_bus = RecordingBus(), RecordingBus()
        applet = Applet(tray_bus, vfiod_bus, AppletSettings())  # type: ignore[arg-type]
        applet.follower.running = True
        applet.run_operation(("Bind", GPU))
        assert GPU in applet.pending  # the menu greys it out while it runs
        while applet._tasks:
            await asyncio.sleep(0)
        return vfiod_bus.calls, tray_bus.calls
    [call], notified = asyncio.run(scenario())
    assert (call.destination, call.path, call.interface, call.member) == (
        "org.vfiod1", "/org/vfiod1", "org.vfiod1.Manager", "Bind")
    assert call.body == [GPU, {}]
    assert call.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION
    assert call.message_type is MessageType.METHOD_CALL
    assert [m.body[3] for m in notified] == ["Bind 0000:06:00.0: done"]
