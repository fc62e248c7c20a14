"""``vfioctl monitor``: follow vfiod's signals live until Ctrl-C or SIGTERM.

Text mode prints one line per device change, diffed against the device's last known
properties, so that a change reported by both DeviceChanged and PropertiesChanged is
printed once. ``--json`` prints every signal as one JSON object a line, flushed at once;
the first line (``{"event": "Ready", ...}``) tells that the subscription is in place.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import datetime
from typing import Any

from dbus_fast import Message, MessageType

from vfiod.ctl import exitcodes, output
from vfiod.ctl.client import (BUS_NAME, DBUS_NAME, DEVICE_IFACE, MANAGER_IFACE,
                              MANAGER_PATH, OBJECT_MANAGER_IFACE, PROPERTIES_IFACE,
                              VfiodClient)
from vfiod.contract import address_from_path
from vfiod.ctl.devices import PROPERTY_FIELDS, DeviceProperties, unwrap
from vfiod.ctl.exitcodes import CtlError

MATCH_RULES = (
    f"type='signal',sender='{BUS_NAME}',interface='{MANAGER_IFACE}',"
    "member='DeviceChanged'",
    f"type='signal',sender='{BUS_NAME}',interface='{PROPERTIES_IFACE}',"
    f"member='PropertiesChanged',path_namespace='{MANAGER_PATH}'",
    f"type='signal',sender='{BUS_NAME}',interface='{OBJECT_MANAGER_IFACE}',"
    f"path='{MANAGER_PATH}'",
    f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
    f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
)


def now() -> str:
    """Local time with milliseconds and offset, for JSON events."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


class Monitor:
    """Turns vfiod's signals into output lines, keeping every device's last state."""

    def __init__(self, json_mode: bool, write: Any = None) -> None:
        self.json_mode = json_mode
        self.devices: dict[str, DeviceProperties] = {}
        self._write = write or _write_line
        #: Set when vfiod (re)appears on the bus: the caller refetches every device.
        self.needs_refresh = False

    def emit(self, event: dict[str, Any] | None, text: str | None) -> None:
        """Print one event in the chosen mode."""
        if self.json_mode and event is not None:
            self._write(output.to_json({"time": now(), **event}))
        elif not self.json_mode and text is not None:
            self._write(text)

    def handle(self, msg: Message) -> None:
        """Process one message from the bus (signals only; the rest is ignored)."""
        if msg.message_type != MessageType.SIGNAL:
            return
        member, iface = msg.member, msg.interface
        if iface == MANAGER_IFACE and member == "DeviceChanged":
            self._device_changed(*msg.body[:3])
        elif iface == PROPERTIES_IFACE and member == "PropertiesChanged":
            if msg.body and msg.body[0] == DEVICE_IFACE:
                self._properties_changed(msg.path, unwrap(msg.body[1]), list(msg.body[2]))
        elif iface == OBJECT_MANAGER_IFACE and member == "InterfacesAdded":
            props = unwrap(msg.body[1]).get(DEVICE_IFACE)
            if props is not None:
                self._added(DeviceProperties.from_properties(props))
        elif iface == OBJECT_MANAGER_IFACE and member == "InterfacesRemoved":
            if DEVICE_IFACE in msg.body[1]:
                self._removed(address_from_path(msg.body[0]) or msg.body[0])
        elif iface == DBUS_NAME and member == "NameOwnerChanged" and msg.body[0] == BUS_NAME:
            self._owner_changed(msg.body[2])

    def _device_changed(self, address: str, state: str, driver: str) -> None:
        dev = self.devices.setdefault(address, DeviceProperties(address))
        changes = dev.update({"Driver": driver, "State": state})
        self.emit({"event": "DeviceChanged", "address": address, "state": state,
                   "driver": driver},
                  output.monitor_line(_clock(), address, dev.name, changes)
                  if changes else None)

    def _properties_changed(self, path: str, changed: dict[str, Any],
                            invalidated: list[str]) -> None:
        address = address_from_path(path)
        if address is None:
            return
        dev = self.devices.setdefault(address, DeviceProperties(address))
        changes = dev.update(changed)
        fields = {PROPERTY_FIELDS.get(k, k): v for k, v in changed.items()}
        self.emit({"event": "PropertiesChanged", "address": address, "changed": fields,
                   "invalidated": [PROPERTY_FIELDS.get(k, k) for k in invalidated]},
                  output.monitor_line(_clock(), address, dev.name, changes)
                  if changes else None)

    def _added(self, dev: DeviceProperties) -> None:
        self.devices[dev.address] = dev
        self.emit({"event": "DeviceAdded", "device": dev.to_json()},
                  f"{_clock()}  {dev.address}  {dev.name}  added (driver "
                  f"{dev.driver or 'none'}, state {dev.state})")

    def _removed(self, address: str) -> None:
        dev = self.devices.pop(address, None)
        name = f"  {dev.name}" if dev is not None and dev.name else ""
        self.emit({"event": "DeviceRemoved", "address": address},
                  f"{_clock()}  {address}{name}  removed")

    def _owner_changed(self, new_owner: str) -> None:
        if new_owner:
            self.needs_refresh = True
            self.emit({"event": "VfiodStarted"}, f"{_clock()}  vfiod is back on the bus")
        else:
            self.emit({"event": "VfiodStopped"},
                      f"{_clock()}  vfiod left the bus (waiting for it to come back)")


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")


def _write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def cmd_monitor(client: VfiodClient, args: argparse.Namespace) -> int:
    """Follow changes until Ctrl-C or SIGTERM (exit 0) or the bus goes away (exit 9)."""
    monitor = Monitor(args.json)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    wake = asyncio.Event()

    def on_message(msg: Message) -> None:
        monitor.handle(msg)
        if monitor.needs_refresh:
            wake.set()

    # Subscribe first, then read the devices: no change falls between the two.
    client.on_message(on_message)
    for rule in MATCH_RULES:
        await client.add_match(rule)
    monitor.devices = await client.devices()
    # The first line says the subscription is in place: a script may act from then on.
    monitor.emit({"event": "Ready", "devices": len(monitor.devices)},
                 f"following {len(monitor.devices)} devices on {client.where} "
                 "(Ctrl-C to stop)")
    disconnected = asyncio.ensure_future(client.wait_for_disconnect())
    stopping = asyncio.ensure_future(stop.wait())
    waking = asyncio.ensure_future(wake.wait())
    try:
        while True:
            done, _ = await asyncio.wait({disconnected, stopping, waking},
                                         return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return exitcodes.OK
            if disconnected in done:
                why = disconnected.exception()
                raise CtlError(f"lost the connection to {client.where}"
                               + (f": {why}" if why else ""), exitcodes.UNREACHABLE)
            wake.clear()
            waking = asyncio.ensure_future(wake.wait())
            monitor.needs_refresh = False
            try:
                monitor.devices = await client.devices()
            except CtlError:
                pass  # it left again at once; the next NameOwnerChanged says so
    finally:
        for task in (disconnected, stopping, waking):
            task.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
