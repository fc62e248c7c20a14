"""Run as uid 65534: every method, property and signal of vfiod, as that user.

``python -m torture.unprivileged_client ADDRESS MONITOR_PID`` (from tests/): drops to
uid/gid 65534 first, then calls every introspected method with a well-formed body,
reads and tries to set every property, tries to own vfiod's name, and sends every
signal vfiod declares (with "SPOOFED" in its strings) to everyone and straight to the
connection of MONITOR_PID. Prints one JSON object: what each attempt got.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from torture.surface import BUS_NAME, introspect, plausible_body

NOBODY = 65534
DBUS = {"destination": "org.freedesktop.DBus", "path": "/org/freedesktop/DBus",
        "interface": "org.freedesktop.DBus"}


def _answer(reply: Message) -> str:
    if reply.message_type is MessageType.METHOD_RETURN:
        return "success"
    return reply.error_name or "?"


async def _unique_name_of(bus: MessageBus, pid: int) -> str | None:
    names = (await bus.call(Message(member="ListNames", **DBUS))).body[0]
    for name in names:
        if name.startswith(":"):
            reply = await bus.call(Message(member="GetConnectionUnixProcessID", signature="s",
                                           body=[name], **DBUS))
            if reply.message_type is MessageType.METHOD_RETURN and reply.body[0] == pid:
                return name
    return None


async def run(address: str, monitor_pid: int) -> dict[str, object]:
    """Every attempt and its answer."""
    bus = await MessageBus(bus_address=address).connect()
    surface = await introspect(bus)
    methods = []
    for m in surface.methods:
        reply = await bus.call(Message(destination=BUS_NAME, path=m.path, interface=m.interface,
                                       member=m.name, signature=m.in_signature,
                                       body=plausible_body(m.in_signature)))
        methods.append([m.path, m.interface, m.name, _answer(reply)])
    props = []
    for p in surface.properties:
        for member, signature, body in (
                ("Get", "ss", [p.interface, p.name]),
                ("Set", "ssv", [p.interface, p.name, Variant(p.signature, plausible_body(
                    p.signature, "SPOOFED")[0])])):
            reply = await bus.call(Message(destination=BUS_NAME, path=p.path,
                                           interface="org.freedesktop.DBus.Properties",
                                           member=member, signature=signature, body=body))
            props.append([p.path, p.name, member, _answer(reply)])
    own = await bus.call(Message(member="RequestName", signature="su", body=[BUS_NAME, 0],
                                 **DBUS))
    target = await _unique_name_of(bus, monitor_pid)
    signals = 0
    for path, interface, member, signature in surface.signals:
        body = plausible_body(signature, "SPOOFED")
        for destination in (None, target):
            await bus.send(Message(message_type=MessageType.SIGNAL, destination=destination,
                                   path=path, interface=interface, member=member,
                                   signature=signature, body=body))
            signals += 1
    await bus.call(Message(member="GetId", **DBUS))  # everything above is routed
    bus.disconnect()
    return {"uid": os.getuid(), "methods": methods, "properties": props,
            "own_name": _answer(own) if own.message_type is MessageType.ERROR
            else f"reply {own.body[0]}", "signals": signals, "monitor_found": target is not None}


def main() -> None:
    """Drop to nobody, then try everything."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    print(json.dumps(asyncio.run(run(sys.argv[1], int(sys.argv[2])))))


if __name__ == "__main__":
    main()
