"""The applet: vfiod's devices (one bus) shown as a tray item with a menu (another bus).

The tray side lives on the session bus: a StatusNotifierItem and its dbusmenu,
registered with org.kde.StatusNotifierWatcher, again whenever the watcher (the tray
host) restarts. The vfiod side is a VfiodFollower on the system bus (or --session /
--address). Everything moves on signals; nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import os

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from vfiod.applet import dbusmenu, sni
from vfiod.applet.dbusmenu import DBusMenu
from vfiod.applet.follower import DBUS_NAME, DBUS_PATH, Transition, VfiodFollower
from vfiod.applet.model import build_menu, choose_look, quarantined, tooltip
from vfiod.applet.notifier import Notifier, notice_for, operation_notice
from vfiod.applet.settings import AppletSettings
from vfiod.applet.sni import StatusNotifierItem
from vfiod.contract import BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH

log = logging.getLogger(__name__)


class Applet:
    """The running applet over two connected buses (they may be the same bus)."""

    def __init__(self, tray_bus: MessageBus, vfiod_bus: MessageBus,
                 settings: AppletSettings) -> None:
        self.tray_bus = tray_bus
        self.vfiod_bus = vfiod_bus
        self.item = StatusNotifierItem()
        self.menu = DBusMenu(self.run_operation)
        self.notifier = Notifier(tray_bus, settings)
        self.follower = VfiodFollower(vfiod_bus, self._vfiod_changed)
        self.pending: set[str] = set()
        self.item_name = f"org.kde.StatusNotifierItem-{os.getpid()}-1"
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Export the tray item, register it, and start following vfiod."""
        self.tray_bus.export(sni.PATH, self.item)
        self.tray_bus.export(dbusmenu.PATH, self.menu)
        await self.tray_bus.request_name(self.item_name)
        self.tray_bus.add_message_handler(self._tray_message)
        await self._tray_dbus("AddMatch", "s", [
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
            f"member='NameOwnerChanged',arg0='{sni.WATCHER_NAME}'"])
        await self.follower.start()
        await self.register()

    async def register(self) -> bool:
        """Register with the StatusNotifierWatcher; False when there is none (yet)."""
        reply = await self.tray_bus.call(Message(
            destination=sni.WATCHER_NAME, path=sni.WATCHER_PATH,
            interface=sni.WATCHER_NAME, member="RegisterStatusNotifierItem",
            signature="s", body=[self.item_name]))
        if reply.message_type is MessageType.ERROR:
            log.info("no tray host yet (%s): waiting for %s", reply.error_name,
                     sni.WATCHER_NAME)
            return False
        log.info("registered with %s", sni.WATCHER_NAME)
        return True

    # -- following ---------------------------------------------------------------------
    def _vfiod_changed(self, transitions: list[Transition]) -> None:
        self.redraw()
        for transition in transitions:
            self.notifier.send(notice_for(transition))

    def redraw(self) -> None:
        """Rebuild the menu and icon from what the follower knows."""
        devices, running = self.follower.devices, self.follower.running
        self.menu.set_menu(build_menu(devices, running, self.pending))
        self.item.show(choose_look(devices, running), tooltip(devices, running))

    def _tray_message(self, msg: Message) -> None:
        if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                and msg.interface == DBUS_NAME and msg.body[0] == sni.WATCHER_NAME
                and msg.body[2]):
            self._spawn(self._reregister())

    async def _reregister(self) -> None:
        await self.register()

    # -- operations --------------------------------------------------------------------
    def run_operation(self, action: tuple[str, str]) -> None:
        """Start Bind / Unbind / Reset of a device (a menu click); answers at once."""
        operation, address = action
        if address in self.pending:
            return
        self.pending.add(address)
        self.redraw()
        self._spawn(self._operate(operation, address))

    async def _operate(self, operation: str, address: str) -> None:
        error: str | None = None
        dev = self.follower.devices.get(address)
        # Reset from the menu of a quarantined device is the user saying it is fixed:
        # it lifts the quarantine (vfioctl reset --clear).
        options = {"clear": Variant("b", True)} if operation == "Reset" and \
            dev is not None and quarantined(dev) else {}
        try:
            # The desktop's polkit agent may ask for a password: allow interaction.
            reply = await self.vfiod_bus.call(Message(
                destination=BUS_NAME, path=MANAGER_PATH, interface=MANAGER_INTERFACE,
                member=operation, signature="sa{sv}", body=[address, options],
                flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION))
            if reply.message_type is MessageType.ERROR:
                error = str(reply.body[0]) if reply.body else str(reply.error_name)
        except Exception as exc:  # the bus went away mid-call: say so, never hang "busy"
            error = f"vfiod did not answer: {exc}"
        finally:
            self.pending.discard(address)
        self.notifier.send(operation_notice(operation, address, error))
        self.redraw()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tray_dbus(self, member: str, signature: str, body: list[object]) -> Message:
        return await self.tray_bus.call(Message(destination=DBUS_NAME, path=DBUS_PATH,
                                                interface=DBUS_NAME, member=member,
                                                signature=signature, body=body))
