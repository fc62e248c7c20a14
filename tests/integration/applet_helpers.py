"""A private session bus with a stand-in tray host and notification daemon, and the
real ``vfiod-applet`` on it, for test_applet.py.

The stand-ins are dbus-fast objects in the test's own process: a
StatusNotifierWatcher that records registrations, and an org.freedesktop.Notifications
that records what it is asked to show. The applet runs as its own process, as a user
starts it, and is stopped by its pid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.annotations import DBusSignature
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, dbus_method

from vfiod.privatebus import die_with_parent

WATCHER = "org.kde.StatusNotifierWatcher"
NOTIFICATIONS = "org.freedesktop.Notifications"
ITEM = "org.kde.StatusNotifierItem"
MENU = "com.canonical.dbusmenu"


@contextmanager
def session_bus() -> Iterator[str]:
    """A dbus-daemon with the session bus's config on a socket in a temp dir; its address."""
    folder = Path(tempfile.mkdtemp(prefix="vfiod-session-"))
    proc = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--nosyslog", "--print-address=1",
         f"--address=unix:path={folder}/bus"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().decode().strip()
        assert address, "dbus-daemon --session did not start"
        yield address
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


class Watcher(ServiceInterface):
    """org.kde.StatusNotifierWatcher: records each RegisterStatusNotifierItem."""

    def __init__(self) -> None:
        super().__init__(WATCHER)
        self.registered: list[str] = []

    @dbus_method(name="RegisterStatusNotifierItem")
    def register_item(self, service: Annotated[str, DBusSignature("s")]
                      ) -> Annotated[None, DBusSignature("")]:
        self.registered.append(service)


class Notifications(ServiceInterface):
    """org.freedesktop.Notifications: records (summary, body) of each Notify."""

    def __init__(self) -> None:
        super().__init__(NOTIFICATIONS)
        self.shown: list[tuple[str, str]] = []

    @dbus_method(name="Notify")
    def notify(self, app: Annotated[str, DBusSignature("s")],
               replaces: Annotated[int, DBusSignature("u")],
               icon: Annotated[str, DBusSignature("s")],
               summary: Annotated[str, DBusSignature("s")],
               body: Annotated[str, DBusSignature("s")],
               actions: Annotated[list[str], DBusSignature("as")],
               hints: Annotated[dict[str, Variant], DBusSignature("a{sv}")],
               timeout: Annotated[int, DBusSignature("i")]
               ) -> Annotated[int, DBusSignature("u")]:
        self.shown.append((summary, body))
        return len(self.shown)


class TrayHost:
    """The stand-in tray host on the session bus, and the applet's signals it sees."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.watcher = Watcher()
        self.notifications = Notifications()
        self.signals: list[Message] = []

    async def start(self, *, watcher: bool = True) -> TrayHost:
        """Own the notification daemon's name (and the watcher's); record item signals."""
        self.bus.export("/org/freedesktop/Notifications", self.notifications)
        await self.bus.request_name(NOTIFICATIONS)
        self.bus.export("/StatusNotifierWatcher", self.watcher)
        if watcher:
            await self.bus.request_name(WATCHER)
        await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',interface='{ITEM}'"]))
        await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',interface='{MENU}'"]))
        self.bus.add_message_handler(self._record)
        return self

    def _record(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.interface in (ITEM, MENU):
            self.signals.append(msg)

    def seen(self, member: str) -> int:
        """How many signals named *member* the applet sent so far."""
        return sum(1 for m in self.signals if m.member == member)

    @property
    def item(self) -> str:
        """The bus name the applet registered (the last registration)."""
        assert self.watcher.registered, "the applet did not register"
        return self.watcher.registered[-1]

    async def call(self, path: str, interface: str, member: str, signature: str = "",
                   body: list[Any] | None = None) -> list[Any]:
        """Call the applet; the reply's body (AssertionError on an error)."""
        reply = await self.bus.call(Message(destination=self.item, path=path,
                                            interface=interface, member=member,
                                            signature=signature, body=body or []))
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        return reply.body

    async def layout(self) -> list[Any]:
        """The applet's whole menu (GetLayout from the root) as nested (label, children)."""
        _revision, root = await self.call("/MenuBar", MENU, "GetLayout", "iias", [0, -1, []])
        return root

    async def icon_name(self) -> str:
        """The tray item's IconName property."""
        (value,) = await self.call("/StatusNotifierItem", "org.freedesktop.DBus.Properties",
                                   "Get", "ss", [ITEM, "IconName"])
        return value.value

    async def click(self, item_id: int) -> None:
        """What a tray host does when the user clicks a menu entry."""
        await self.call("/MenuBar", MENU, "Event", "isvu",
                        [item_id, "clicked", Variant("s", ""), 0])


def labels(node: list[Any]) -> list[str]:
    """Every label in a layout, depth first."""
    _id, props, children = node
    own = [props["label"].value.replace("__", "_")] if "label" in props else []
    return own + [label for child in children for label in labels(child.value)]


def find_item(node: list[Any], path: list[str]) -> int:
    """The id of the entry reached by labels, each a prefix (``["gpu (", "Bind"]``)."""
    if not path:
        return int(node[0])
    for child in node[2]:
        item = child.value
        label = item[1].get("label")
        if label is not None and label.value.replace("__", "_").startswith(path[0]):
            return find_item(item, path[1:])
    raise AssertionError(f"no menu entry {path[0]!r} in {labels(node)}")


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Wait (on the event loop) until *predicate* holds; its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def until_async(predicate: Callable[[], Any], timeout: float = 10.0,
                      what: str = "") -> Any:
    """Like until() for a coroutine predicate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


@contextmanager
def applet(vfiod_address: str, tray_address: str, config: Path) -> Iterator[
        subprocess.Popen[str]]:
    """``vfiod-applet`` following vfiod on one bus with its tray item on another."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vfiod.applet.main", "--address", vfiod_address,
         "--tray-address", tray_address, "--config", str(config), "-v"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "PYTHONWARNINGS": "error"})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
