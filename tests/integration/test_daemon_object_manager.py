"""vfiod's own GetManagedObjects and signals say exactly what dbus-fast's would.

vfiod answers GetManagedObjects from the values its objects keep, and sends
PropertiesChanged and DeviceChanged itself (vfiod.daemon.bus), because dbus-fast's
generic versions cost seconds, or a search of every object per signal, on a machine
with thousands of functions. Here a vfiod runs in the test's own
process on the private bus, so that a test can switch its cached answer off and ask
again: a real dbus-fast client on its own connection then receives both answers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from vfiod.daemon.runtime import Daemon
from vfiod.privatebus import PrivateBus

from .helpers import (BUS_NAME, DEVICE_IFACE, MANAGER, SignalRecorder, call, client,
                      device_path)
from .inprocess import vfiod_in_process

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"

Ordered = list[tuple[str, list[tuple[str, list[tuple[str, str, Any]]]]]]


async def get_managed_objects(bus: MessageBus, path: str) -> Message:
    """GetManagedObjects on *path* of vfiod; the reply."""
    reply = await bus.call(Message(destination=BUS_NAME, path=path, interface=OBJECT_MANAGER,
                                   member="GetManagedObjects"))
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    return reply


async def cached_and_generic(daemon: Daemon, bus: MessageBus,
                             path: str) -> tuple[Message, Message]:
    """GetManagedObjects on *path* answered by vfiod's cache, then by dbus-fast itself."""
    assert daemon.bus is not None
    cached = await get_managed_objects(bus, path)
    daemon.bus.managed_objects_from_cache = False
    try:
        generic = await get_managed_objects(bus, path)
    finally:
        daemon.bus.managed_objects_from_cache = True
    return cached, generic


def ordered(objects: dict[str, dict[str, dict[str, Any]]]) -> Ordered:
    """Objects, interfaces and properties in the order received, with signature and value."""
    return [(path, [(name, [(prop, v.signature, v.value) for prop, v in props.items()])
                    for name, props in interfaces.items()])
            for path, interfaces in objects.items()]


def test_get_managed_objects_from_the_cache_is_what_dbus_fast_answers(
        private_bus: PrivateBus, tmp_path: Path) -> None:
    async def scenario() -> tuple[Message, Message, int]:
        async with (vfiod_in_process(private_bus, tmp_path) as daemon,
                    client(private_bus.address) as bus):
            cached, generic = await cached_and_generic(daemon, bus, MANAGER)
            rows = (await call(bus, "Status")).body[0]
            return cached, generic, len(rows)

    cached, generic, functions = asyncio.run(scenario())
    assert cached.signature == generic.signature == "a{oa{sa{sv}}}"
    assert ordered(cached.body[0]) == ordered(generic.body[0])
    objects = cached.body[0]
    assert len(objects) == functions > 0
    gpu = objects[device_path(GPU)][DEVICE_IFACE]
    assert (gpu["Address"].value, gpu["ConfigName"].value) == (GPU, "gpu")


def test_get_managed_objects_on_other_paths_is_what_dbus_fast_answers(
        private_bus: PrivateBus, tmp_path: Path) -> None:
    paths = ["/", "/org", "/org/vfiod1/device", device_path(GPU), "/org/vfiod1/nothing"]

    async def scenario() -> dict[str, tuple[Message, Message]]:
        async with (vfiod_in_process(private_bus, tmp_path) as daemon,
                    client(private_bus.address) as bus):
            return {path: await cached_and_generic(daemon, bus, path) for path in paths}

    answers = asyncio.run(scenario())
    for path, (cached, generic) in answers.items():
        assert ordered(cached.body[0]) == ordered(generic.body[0]), path
    everything = answers["/"][0].body[0]
    assert MANAGER in everything and device_path(GPU) in everything
    assert answers[device_path(GPU)][0].body[0] == {}


def test_get_managed_objects_from_the_cache_follows_a_bind(
        private_bus: PrivateBus, tmp_path: Path) -> None:
    async def scenario() -> tuple[Message, Message]:
        async with (vfiod_in_process(private_bus, tmp_path) as daemon,
                    client(private_bus.address) as bus):
            await get_managed_objects(bus, MANAGER)  # the cache is in use before
            reply = await call(bus, "Bind", "sa{sv}", [GPU, {}])
            assert reply.message_type is MessageType.METHOD_RETURN, reply.body
            return await cached_and_generic(daemon, bus, MANAGER)

    cached, generic = asyncio.run(scenario())
    assert ordered(cached.body[0]) == ordered(generic.body[0])
    for address in (GPU, AUDIO):
        props = cached.body[0][device_path(address)][DEVICE_IFACE]
        assert (props["State"].value, props["Driver"].value) == ("vfio", "vfio-pci")


def test_properties_changed_is_the_signal_dbus_fast_would_send(
        private_bus: PrivateBus, tmp_path: Path) -> None:
    async def scenario() -> list[tuple[Message, Message]]:
        async with (vfiod_in_process(private_bus, tmp_path) as daemon,
                    client(private_bus.address) as bus):
            signals = await SignalRecorder(bus).start()

            def changes() -> list[Message]:
                return [m for m in signals.messages if m.member == "PropertiesChanged"
                        and m.path == device_path(AUDIO)]

            # Behind the daemon's back: Driver and State change in one sync.
            unbind = tmp_path / "sim/sys/bus/pci/drivers/snd_hda_intel/unbind"
            await asyncio.to_thread(unbind.write_text, AUDIO)
            await signals.wait(lambda: any("State" in m.body[1] for m in changes()))
            # Each of vfiod's own signals, then dbus-fast's for the same values.
            assert daemon.view is not None
            audio = daemon.view.objects[AUDIO]
            pairs = []
            for ours in changes():
                seen = len(changes())
                audio.emit_properties_changed({k: v.value for k, v in ours.body[1].items()})
                theirs = (await signals.wait(lambda seen=seen: changes()[seen:]))[0]
                pairs.append((ours, theirs))
            return pairs

    pairs = asyncio.run(scenario())
    for ours, theirs in pairs:
        assert (ours.path, ours.interface, ours.signature) == (theirs.path, theirs.interface,
                                                              theirs.signature)
        assert ours.body[0] == theirs.body[0] == DEVICE_IFACE
        assert list(ours.body[1].items()) == list(theirs.body[1].items())
        assert ours.body[2] == theirs.body[2] == []
    assert any({"Driver", "State"} <= set(ours.body[1]) for ours, _ in pairs)


def test_device_changed_is_the_signal_dbus_fast_would_send(
        private_bus: PrivateBus, tmp_path: Path) -> None:
    async def scenario() -> tuple[Message, Message]:
        async with (vfiod_in_process(private_bus, tmp_path) as daemon,
                    client(private_bus.address) as bus):
            signals = await SignalRecorder(bus).start()

            def changes() -> list[Message]:
                return [m for m in signals.messages if m.member == "DeviceChanged"]

            unbind = tmp_path / "sim/sys/bus/pci/drivers/snd_hda_intel/unbind"
            await asyncio.to_thread(unbind.write_text, AUDIO)
            ours = (await signals.wait(changes))[0]
            # dbus-fast's own, from the Manager's declared signal, with the same arguments.
            assert daemon.view is not None
            daemon.view.manager.device_changed(*ours.body)
            theirs = (await signals.wait(lambda: changes()[1:]))[0]
            return ours, theirs

    ours, theirs = asyncio.run(scenario())
    assert ours.body == [AUDIO, "unbound", ""]
    assert (ours.path, ours.interface, ours.member, ours.signature, ours.body) == \
        (theirs.path, theirs.interface, theirs.member, theirs.signature, theirs.body)
