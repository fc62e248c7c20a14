"""vfiod's devices, kept current from its signals only (no polling).

Subscribes to DeviceChanged, PropertiesChanged, the ObjectManager's signals and
NameOwnerChanged for org.vfiod1; reads every device once (GetManagedObjects) when it
starts and whenever vfiod (re)appears on the bus. Tells its listener what changed, as
``Transition``s the notifier turns into notifications.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from vfiod.applet.model import in_trouble
from vfiod.contract import BUS_NAME, DEVICE_INTERFACE, MANAGER_PATH, address_from_path
from vfiod.ctl.devices import DeviceProperties, unwrap
from vfiod.ctl.monitor import MATCH_RULES
from vfiod.printable import printable

log = logging.getLogger(__name__)

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
#: vfiod's Releasing signal (a forced Bind asks the desktop to let go of a GPU): the
#: applet's own subscription beside the ones it shares with `vfioctl monitor`.
RELEASING_RULE = (f"type='signal',sender='{BUS_NAME}',interface='org.vfiod1.Manager',"
                  "member='Releasing'")


@dataclass(frozen=True)
class Transition:
    """A change a user may want to hear about: ``kind`` is a notification kind."""

    kind: str  # "guest_took", "device_back", "device_error" or "releasing"
    device: DeviceProperties
    detail: str = ""
    #: For "releasing": the programs that hold the card, and how long they have.
    holders: tuple[str, ...] = ()
    timeout_ms: int = 0


def transitions(before: DeviceProperties, after: DeviceProperties) -> list[Transition]:
    """What changed between two copies of one device, in a user's terms."""
    found: list[Transition] = []
    if after.state == "guest" and before.state != "guest":
        found.append(Transition("guest_took", after, after.holder))
    if before.state == "guest" and after.state != "guest":
        found.append(Transition("device_back", after, before.holder))
    if in_trouble(after) and not in_trouble(before):
        found.append(Transition("device_error", after, after.error))
    return found


class VfiodFollower:
    """vfiod's devices on one bus connection, and whether vfiod is running."""

    def __init__(self, bus: MessageBus,
                 on_change: Callable[[list[Transition]], None]) -> None:
        self.bus = bus
        self.devices: dict[str, DeviceProperties] = {}
        self.running = False
        self._on_change = on_change
        self._refresh_task: asyncio.Task[None] | None = None
        self._generation = 0
        # While a GetManagedObjects is out: its serial, and vfiod's signals that came
        # after its answer (to apply on top of it; those before are in it).
        self._snapshot_serial = 0
        self._held: list[Message] | None = None

    async def start(self) -> None:
        """Subscribe, then read the devices: no change falls between the two."""
        self.bus.add_message_handler(self._handle)
        for rule in (*MATCH_RULES, RELEASING_RULE):
            await self._dbus("AddMatch", "s", [rule])
        reply = await self._dbus("NameHasOwner", "s", [BUS_NAME])
        if reply.body and reply.body[0]:
            await self.refresh()
        else:
            self._on_change([])

    async def _dbus(self, member: str, signature: str, body: list[object]) -> Message:
        return await self.bus.call(Message(destination=DBUS_NAME, path=DBUS_PATH,
                                           interface=DBUS_NAME, member=member,
                                           signature=signature, body=body))

    async def refresh(self) -> None:
        """Read every device from vfiod's ObjectManager (on start and on its return)."""
        self._generation += 1
        generation = self._generation
        request = Message(destination=BUS_NAME, path=MANAGER_PATH, interface=OBJECT_MANAGER,
                          member="GetManagedObjects")
        request.serial = self._snapshot_serial = self.bus.next_serial()
        self._held = []
        reply = await self.bus.call(request)
        if generation != self._generation:
            return  # vfiod left (or came back again) meanwhile: a newer answer is due
        held, self._held = self._held or [], None
        if reply.message_type is not MessageType.METHOD_RETURN:
            log.info("vfiod did not answer GetManagedObjects: %s", reply.body)
            return
        found: dict[str, DeviceProperties] = {}
        for interfaces in reply.body[0].values():
            props = interfaces.get(DEVICE_INTERFACE)
            if props is not None:
                dev = DeviceProperties.from_properties(unwrap(props))
                found[dev.address] = dev
        changes = [t for address, dev in found.items() if address in self.devices
                   for t in transitions(self.devices[address], dev)]
        self.devices = found
        self.running = True
        self._on_change(changes)
        for msg in held:
            self._handle(msg)

    def _handle(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            if self._held is not None and msg.reply_serial == self._snapshot_serial:
                self._held.clear()  # what came before the snapshot's answer is in it
            return
        member, iface = msg.member, msg.interface
        if iface == DBUS_NAME and member == "NameOwnerChanged" and msg.body[0] == BUS_NAME:
            self._owner_changed(msg.body[2])
        elif msg.sender == DBUS_NAME:
            return
        elif self._held is not None:
            self._held.append(msg)  # the snapshot is on its way: apply after it
        elif not self.running:
            return
        elif iface == "org.vfiod1.Manager" and member == "DeviceChanged":
            address, state, driver = msg.body[:3]
            self._update(address, {"State": state, "Driver": driver})
        elif iface == "org.vfiod1.Manager" and member == "Releasing":
            self._releasing(msg)
        elif iface == PROPERTIES and member == "PropertiesChanged":
            address = address_from_path(msg.path)
            if address is not None and msg.body[0] == DEVICE_INTERFACE:
                self._update(address, unwrap(msg.body[1]))
        elif iface == OBJECT_MANAGER and member == "InterfacesAdded":
            props = unwrap(msg.body[1]).get(DEVICE_INTERFACE)
            if props is not None:
                dev = DeviceProperties.from_properties(props)
                self.devices[dev.address] = dev
                self._on_change([])
        elif iface == OBJECT_MANAGER and member == "InterfacesRemoved":
            address = address_from_path(msg.body[0])
            if DEVICE_INTERFACE in msg.body[1] and address in self.devices:
                del self.devices[address]
                self._on_change([])

    def _update(self, address: str, changed: dict[str, object]) -> None:
        dev = self.devices.get(address)
        if dev is None:
            return  # InterfacesAdded brings it whole
        before = DeviceProperties(**{**dev.__dict__, "extra": dict(dev.extra),
                                     "reset_methods": list(dev.reset_methods)})
        if dev.update(changed):
            self._on_change(transitions(before, dev))

    def _releasing(self, msg: Message) -> None:
        """Releasing(s device, as holders, u timeout_ms): tell the user who must let go."""
        if msg.signature != "sasu":
            return  # not what vfiod sends
        address, holders, timeout_ms = msg.body
        dev = self.devices.get(address)
        if dev is None:
            return
        shown = tuple(printable(str(h)) for h in holders)
        self._on_change([Transition("releasing", dev, ", ".join(shown), shown,
                                    int(timeout_ms))])

    def _owner_changed(self, new_owner: str) -> None:
        self._generation += 1
        self._held = None
        if new_owner:
            self._refresh_task = asyncio.ensure_future(self.refresh())
        else:
            self.running = False
            self._on_change([])
