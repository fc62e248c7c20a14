"""Who may call what: root always, others when polkit says yes, nobody else.

dbus-fast does not hand the calling message to a service method. A message handler
(run for every incoming message before dispatch) stores the sender in a ContextVar;
an ``async`` method runs in a task created right after, which copies the context, so
the method sees its own caller. The caller's uid comes from the bus
(GetConnectionUnixUser), the decision for others from polkit's CheckAuthorization with
a ``system-bus-name`` subject (so polkit itself checks the process behind the name).

polkitd is often not running when the first call comes: servers and minimal installs
start it by D-Bus activation. So polkit is asked whenever the bus has it, running or
activatable (ListActivatableNames), and the call lets the bus start it (auto-start is
dbus-fast's default). Only a bus with no polkit service at all makes vfiod root-only.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.constants import MessageFlag
from dbus_fast.errors import DBusError

from vfiod.errors import AccessDenied

ACTION_MANAGE = "org.vfiod1.manage"
POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_INTERFACE = "org.freedesktop.PolicyKit1.Authority"
ALLOW_USER_INTERACTION = 1
#: An administrator may be typing a password in an authentication agent.
POLKIT_TIMEOUT = 300.0

#: The unique bus name of the client whose method call is being served.
caller: ContextVar[str | None] = ContextVar("vfiod_caller", default=None)
#: False while serving a call sent with NO_REPLY_EXPECTED: its errors go to nobody.
reply_expected: ContextVar[bool] = ContextVar("vfiod_reply_expected", default=True)


def remember_caller(msg: Message) -> None:
    """Message handler: note the sender of each method call, and whether it waits for
    an answer, for the method to read."""
    if msg.message_type is MessageType.METHOD_CALL:
        caller.set(msg.sender)
        reply_expected.set(not msg.flags.value & MessageFlag.NO_REPLY_EXPECTED.value)


class Authorizer:
    """Decides whether the current caller may perform an action."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    def install(self) -> None:
        """Start noting callers (before any object is exported)."""
        self.bus.add_message_handler(remember_caller)

    async def check(self, action: str = ACTION_MANAGE) -> None:
        """Return when the caller may perform *action*; raise AccessDenied otherwise."""
        sender = caller.get()
        if not sender:
            raise AccessDenied("cannot tell who is calling; refusing")
        uid = await self._bus_call("GetConnectionUnixUser", "s", [sender])
        if uid == 0:
            return
        if not await self._polkit_on_bus():
            raise AccessDenied(f"uid {uid} may not do this: only root may manage devices "
                               "when the system has no polkit")
        if not await self._polkit_allows(sender, action):
            raise AccessDenied(f"uid {uid} is not authorized for {action} (polkit said no)")

    async def _polkit_on_bus(self) -> bool:
        """True when polkitd runs or the bus can start it."""
        if await self._bus_call("NameHasOwner", "s", [POLKIT_NAME]):
            return True
        activatable = await self._bus_call("ListActivatableNames", "", [])
        return POLKIT_NAME in activatable  # type: ignore[operator]

    async def _bus_call(self, member: str, signature: str, body: list[object]) -> object:
        reply = await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member=member, signature=signature, body=body))
        if reply.message_type is MessageType.ERROR:
            # The caller vanished, most likely: nobody to authorize.
            raise AccessDenied(f"cannot identify the caller: {reply.error_name}")
        return reply.body[0]

    async def _polkit_allows(self, sender: str, action: str) -> bool:
        subject = ("system-bus-name", {"name": Variant("s", sender)})
        msg = Message(destination=POLKIT_NAME, path=POLKIT_PATH, interface=POLKIT_INTERFACE,
                      member="CheckAuthorization", signature="(sa{sv})sa{ss}us",
                      body=[subject, action, {}, ALLOW_USER_INTERACTION, ""])
        try:
            async with asyncio.timeout(POLKIT_TIMEOUT):
                reply = await self.bus.call(msg)
        except (TimeoutError, DBusError) as exc:
            raise AccessDenied(f"polkit did not answer: {exc}") from None
        if reply.message_type is MessageType.ERROR:
            detail = reply.body[0] if reply.body else reply.error_name
            raise AccessDenied(f"polkit refused to decide: {detail}")
        is_authorized, _is_challenge, _details = reply.body[0]
        return bool(is_authorized)
