"""The follower's snapshot: vfiod's signals that arrive while GetManagedObjects is out
count only when they come after its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dbus_fast import Message, Variant

from vfiod.applet.follower import VfiodFollower

GPU = "0000:06:00.0"
GPU_PATH = "/org/vfiod1/device/pci_0000_06_00_0"


def device_changed(state: str) -> Message:
    msg = Message.new_signal("/org/vfiod1", "org.vfiod1.Manager", "DeviceChanged", "sss",
                             [GPU, state, "vfio-pci"])
    msg.sender = ":1.7"
    return msg


class SnapshotBus:
    """Answers GetManagedObjects with the GPU in *state*, delivering *before* ahead of
    the answer and *after* right behind it (as one read from the socket would)."""

    def __init__(self, state: str, before: list[Message], after: list[Message]) -> None:
        self.state, self.before, self.after = state, before, after
        self.handlers: list[Callable[[Message], None]] = []
        self.serial = 100

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def add_message_handler(self, handler: Callable[[Message], None]) -> None:
        self.handlers.append(handler)

    async def call(self, msg: Message) -> Message:
        props = {"Address": Variant("s", GPU), "State": Variant("s", self.state),
                 "Driver": Variant("s", "vfio-pci")}
        reply = Message.new_method_return(msg, "a{oa{sa{sv}}}",
                                          [{GPU_PATH: {"org.vfiod1.Device": props}}])
        for m in [*self.before, reply, *self.after]:
            for handler in self.handlers:
                handler(m)
        await asyncio.sleep(0)
        return reply


def final_state(bus: SnapshotBus) -> str:
    async def scenario() -> str:
        follower = VfiodFollower(bus, lambda changes: None)  # type: ignore[arg-type]
        bus.add_message_handler(follower._handle)
        await follower.refresh()
        return follower.devices[GPU].state
    return asyncio.run(scenario())


def test_a_signal_after_the_snapshots_answer_is_applied_on_top_of_it() -> None:
    assert final_state(SnapshotBus("busy", [], [device_changed("vfio")])) == "vfio"


def test_a_signal_before_the_snapshots_answer_is_already_in_it() -> None:
    assert final_state(SnapshotBus("vfio", [device_changed("busy")], [])) == "vfio"
