"""``vfioctl monitor``: follow vfiod's signals live until Ctrl-C or SIGTERM.

Text mode prints one line per device change, diffed against the device's last known
properties, so that a change reported by both DeviceChanged and PropertiesChanged is
printed once. ``--json`` prints every signal as one JSON object a line, flushed at once;
the first line (``{"event": "Ready", ...}``) tells that the subscription is in place.

Any local client may send a signal straight to monitor's connection: only signals from
the unique name that owns org.vfiod1 now (followed through the bus's own
NameOwnerChanged) are believed, and a signal whose signature or values are not the
documented ones is dropped without a word. When the reader of a pipe goes away
(``vfioctl monitor | head -1``) monitor ends at once with status 0, as ``yes`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dbus_fast import Message, MessageType

from vfiod.ctl import exitcodes, output
from vfiod.ctl.client import (BUS_NAME, DBUS_NAME, DBUS_PATH, DEVICE_IFACE, MANAGER_IFACE,
                              MANAGER_PATH, OBJECT_MANAGER_IFACE, PROPERTIES_IFACE,
                              VfiodClient)
from vfiod.contract import JOB_INTERFACE, address_from_path
from vfiod.ctl.devices import PROPERTY_FIELDS, DeviceProperties, unwrap
from vfiod.ctl.exitcodes import CtlError
from vfiod.printable import printable

MATCH_RULES = (
    f"type='signal',sender='{BUS_NAME}',interface='{MANAGER_IFACE}',"
    "member='DeviceChanged'",
    f"type='signal',sender='{BUS_NAME}',interface='{MANAGER_IFACE}',"
    "member='JobFinished'",
    f"type='signal',sender='{BUS_NAME}',interface='{PROPERTIES_IFACE}',"
    f"member='PropertiesChanged',path_namespace='{MANAGER_PATH}'",
    f"type='signal',sender='{BUS_NAME}',interface='{OBJECT_MANAGER_IFACE}',"
    f"path='{MANAGER_PATH}'",
    f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
    f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
)


#: The signals monitor follows, with the only signature each may have.
SIGNATURES: dict[tuple[str, str], str] = {
    (MANAGER_IFACE, "DeviceChanged"): "sss",
    (MANAGER_IFACE, "JobFinished"): "osass",
    (PROPERTIES_IFACE, "PropertiesChanged"): "sa{sv}as",
    (OBJECT_MANAGER_IFACE, "InterfacesAdded"): "oa{sa{sv}}",
    (OBJECT_MANAGER_IFACE, "InterfacesRemoved"): "oas",
    (DBUS_NAME, "NameOwnerChanged"): "sss",
}


def now() -> str:
    """Local time with milliseconds and offset, for JSON events."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


class Monitor:
    """Turns vfiod's signals into output lines, keeping every device's last state."""

    def __init__(self, json_mode: bool, write: Any = None, owner: str | None = None) -> None:
        self.json_mode = json_mode
        self.devices: dict[str, DeviceProperties] = {}
        self._write = write or _write_line
        #: The unique name that owns org.vfiod1 (``:1.5``); None while nobody does.
        self.owner = owner
        #: Set when vfiod (re)appears on the bus: the caller refetches every device.
        self.needs_refresh = False
        #: Set when stdout's reader went away; *on_reader_gone* is called then.
        self.reader_gone = False
        self.on_reader_gone: Callable[[], None] | None = None

    def emit(self, event: dict[str, Any] | None, text: str | None) -> None:
        """Print one event in the chosen mode."""
        if self.reader_gone:
            return
        try:
            if self.json_mode and event is not None:
                self._write(output.to_json({"time": now(), **event}))
            elif not self.json_mode and text is not None:
                self._write(text)
        except BrokenPipeError:
            # Raised inside dbus-fast's handler dispatch, which would only log it: the
            # command's own loop ends instead.
            self.reader_gone = True
            if self.on_reader_gone is not None:
                self.on_reader_gone()

    def handle(self, msg: Message) -> None:
        """Process one message from the bus (signals only; the rest is ignored).

        Only the bus itself is believed about who owns org.vfiod1, and only that owner
        about devices; a signal of another signature, or whose values make no sense,
        is dropped.
        """
        if msg.message_type != MessageType.SIGNAL:
            return
        member, iface = msg.member, msg.interface
        expected = SIGNATURES.get((iface or "", member or ""))
        if expected is None or msg.signature != expected:
            return
        if iface == DBUS_NAME:
            if msg.sender == DBUS_NAME and msg.path == DBUS_PATH and msg.body[0] == BUS_NAME:
                self._owner_changed(msg.body[2])
            return
        if self.owner is None or msg.sender != self.owner:
            return
        try:
            self._dispatch(msg)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError):
            pass  # the right signature, values no vfiod sends: nothing to show

    def _dispatch(self, msg: Message) -> None:
        member, iface = msg.member, msg.interface
        if iface == MANAGER_IFACE and member == "DeviceChanged":
            self._device_changed(*(printable(v) for v in msg.body[:3]))
        elif iface == PROPERTIES_IFACE and member == "PropertiesChanged":
            if msg.body and msg.body[0] == DEVICE_IFACE:
                self._properties_changed(msg.path, unwrap(msg.body[1]), list(msg.body[2]))
        elif iface == MANAGER_IFACE and member == "JobFinished":
            self._job_finished(*msg.body[:4])
        elif iface == OBJECT_MANAGER_IFACE and member == "InterfacesAdded":
            interfaces = unwrap(msg.body[1])
            props = interfaces.get(DEVICE_IFACE)
            if props is not None:
                self._added(DeviceProperties.from_properties(props))
            if JOB_INTERFACE in interfaces:
                self._job_started(msg.body[0], interfaces[JOB_INTERFACE])
        elif iface == OBJECT_MANAGER_IFACE and member == "InterfacesRemoved":
            if DEVICE_IFACE in msg.body[1]:
                self._removed(address_from_path(msg.body[0]) or msg.body[0])

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

    def _job_started(self, path: str, props: dict[str, Any]) -> None:
        """A job's object appeared: an operation started (by anyone)."""
        operation = printable(str(props.get("Operation", "")))
        devices = [printable(str(d)) for d in props.get("Devices", [])]
        self.emit({"event": "JobStarted", "job": path, "operation": operation,
                   "devices": devices},
                  f"{_clock()}  job {path.rsplit('/', 1)[-1]}  {operation} "
                  f"{', '.join(devices)}  started")

    def _job_finished(self, path: str, result: str, devices: list[str], error: str) -> None:
        result, error = printable(result), printable(error)
        devices = [printable(str(d)) for d in devices]
        self.emit({"event": "JobFinished", "job": path, "result": result, "devices": devices,
                   "error": error},
                  f"{_clock()}  job {path.rsplit('/', 1)[-1]}  {result}"
                  + (f": {', '.join(devices)}" if devices and result == "done" else "")
                  + (f": {error}" if error else ""))

    def _owner_changed(self, new_owner: str) -> None:
        self.owner = new_owner or None
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


def _watch_pipe_reader(loop: asyncio.AbstractEventLoop, gone: Callable[[], None]) -> bool:
    """Call *gone* as soon as the reader of stdout closes it, when stdout is a pipe.

    A pipe's write end never becomes readable: epoll reports it (EPOLLERR) only once
    the read end is closed, so ``monitor | head -1`` ends without waiting for an event
    to write. Returns True when the watch is in place.
    """
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        loop.add_reader(fd, gone)
    except (OSError, ValueError, AttributeError):
        return False
    return True


async def _owner_of(client: VfiodClient) -> str | None:
    """The unique name that owns org.vfiod1 now, or None."""
    try:
        (owner,) = await client.call(DBUS_PATH, DBUS_NAME, "GetNameOwner", "s", [BUS_NAME],
                                     destination=DBUS_NAME)
    except CtlError:
        return None
    return str(owner) or None


async def cmd_monitor(client: VfiodClient, args: argparse.Namespace) -> int:
    """Follow changes until Ctrl-C or SIGTERM (exit 0) or the bus goes away (exit 9).

    When stdout's reader goes away, BrokenPipeError ends it (vfioctl exits 0, quietly).
    """
    monitor = Monitor(args.json)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reader_gone = asyncio.Event()

    def gone() -> None:
        monitor.reader_gone = True
        reader_gone.set()
        stop.set()

    monitor.on_reader_gone = gone
    watching_pipe = _watch_pipe_reader(loop, gone)
    wake = asyncio.Event()

    def on_message(msg: Message) -> None:
        monitor.handle(msg)
        if monitor.needs_refresh:
            wake.set()

    # Subscribe first, then read the devices: no change falls between the two.
    client.on_message(on_message)
    for rule in MATCH_RULES:
        await client.add_match(rule)
    # Signals before the owner is known are dropped: the devices read next include them.
    monitor.owner = await _owner_of(client)
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
            if reader_gone.is_set():
                raise BrokenPipeError("stdout's reader went away")
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
        if watching_pipe:
            loop.remove_reader(sys.stdout.fileno())
