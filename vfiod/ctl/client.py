"""The D-Bus client of vfiod: plain method calls with dbus-fast, no introspection.

Every failure becomes a CtlError (vfiod.ctl.exitcodes) carrying its exit code: errors
vfiod sends keep their message, bus-level failures say that vfiod cannot be reached.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

from dbus_fast import BusType, InvalidAddressError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from vfiod.contract import (BUS_NAME, DEVICE_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH,  # noqa: F401
                             device_path)
from vfiod.ctl import exitcodes
from vfiod.ctl.exitcodes import CtlError
from vfiod.ctl.devices import unwrap
# The names, limits, messages and query methods both clients share are wire's (which
# imports no dbus-fast).
from vfiod.ctl.wire import (OBJECT_MANAGER_IFACE, PROPERTIES_IFACE,  # noqa: F401
                             QUERY_TIMEOUT, SYSTEM_BUS_DEFAULT, UNKNOWN_OBJECT_ERRORS, Queries,
                             bus_description, connect_timed_out, error_for, failure_reason,
                             no_answer, system_bus_address, unreachable)
from vfiod.printable import printable

MANAGER_IFACE = MANAGER_INTERFACE
DEVICE_IFACE = DEVICE_INTERFACE
DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"

#: Bind/Unbind/Reset: the daemon bounds each sysfs write, a whole group takes longer.
OPERATION_TIMEOUT = 120.0



class VfiodClient(Queries):
    """A connection to the bus with vfiod's methods as coroutines."""

    plain = staticmethod(unwrap)  # dbus-fast's replies hold Variants

    def __init__(self, bus: MessageBus, where: str, timeout: float | None = None) -> None:
        self.bus = bus
        self.where = where
        #: An explicit --timeout; None: the defaults above.
        self.timeout = timeout

    @classmethod
    async def connect(cls, *, session: bool = False, address: str | None = None,
                      timeout: float | None = None) -> VfiodClient:
        """Connect to the system bus (DBUS_SYSTEM_BUS_ADDRESS honoured), the session
        bus, or the bus at *address*; CtlError (exit 9) when that fails."""
        where = bus_description(session, address)
        try:
            if address:
                bus = MessageBus(bus_address=address)
            else:
                bus = MessageBus(bus_type=BusType.SESSION if session else BusType.SYSTEM)
        except InvalidAddressError as exc:
            if address:
                raise CtlError(f"--address {address}: not a D-Bus address ({exc})",
                               exitcodes.USAGE) from None
            raise CtlError(f"cannot reach vfiod on {where}: {failure_reason(exc)}",
                           exitcodes.UNREACHABLE) from None
        except Exception as exc:  # e.g. no session bus address in the environment
            raise CtlError(f"cannot reach vfiod on {where}: {failure_reason(exc)}",
                           exitcodes.UNREACHABLE) from None
        limit = timeout or QUERY_TIMEOUT
        try:
            await asyncio.wait_for(bus.connect(), limit)
        except asyncio.TimeoutError:
            # The socket is there and took the connection: nothing says vfiod is down.
            raise connect_timed_out(where, limit, bool(timeout)) from None
        except Exception as exc:  # any failure to connect means the same to a user
            shown = "" if address else f"{_address_of(session)}: "
            raise unreachable(where, shown + failure_reason(exc)) from None
        return cls(bus, where, timeout)

    def close(self) -> None:
        """Disconnect (idempotent)."""
        try:
            self.bus.disconnect()
        except Exception:  # already gone
            pass

    # -- plain calls -------------------------------------------------------------------
    async def call(self, path: str, interface: str, member: str, signature: str = "",
                   body: Sequence[Any] = (), *, destination: str = BUS_NAME,
                   timeout: float | None = None) -> list[Any]:
        """Call a method and return its reply body; CtlError for any error reply."""
        msg = Message(destination=destination, path=path, interface=interface,
                      member=member, signature=signature, body=list(body))
        limit = self.timeout or timeout or QUERY_TIMEOUT
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), limit)
        except asyncio.TimeoutError:
            raise no_answer(member, limit) from None
        except Exception as exc:  # the connection broke
            raise unreachable(self.where, failure_reason(exc)) from None
        if reply.message_type == MessageType.ERROR:
            raise self._error(reply, destination)
        return list(reply.body)

    def _error(self, reply: Message, destination: str) -> CtlError:
        name = reply.error_name or ""
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else name
        return error_for(name, text, destination, self.where)

    async def query(self, path: str, interface: str, member: str,
                    strings: Sequence[str] = ()) -> list[Any]:
        """The query methods' calls (Queries), with string arguments."""
        return await self.call(path, interface, member, "s" * len(strings), strings)

    # -- the Manager -------------------------------------------------------------------
    async def bind(self, device: str, *, group: bool = True, force: bool = False) -> list[str]:
        """Manager.Bind; the addresses now on vfio-pci because of it."""
        options = {"group": Variant("b", group)}
        if force:
            options["force"] = Variant("b", True)
        (moved,) = await self.call(MANAGER_PATH, MANAGER_IFACE, "Bind", "sa{sv}",
                                   [device, options], timeout=OPERATION_TIMEOUT)
        return [printable(str(a)) for a in moved]

    async def unbind(self, device: str, *, group: bool = True) -> list[str]:
        """Manager.Unbind; the addresses given back to host drivers."""
        (moved,) = await self.call(MANAGER_PATH, MANAGER_IFACE, "Unbind", "sa{sv}",
                                   [device, {"group": Variant("b", group)}],
                                   timeout=OPERATION_TIMEOUT)
        return [printable(str(a)) for a in moved]

    async def reset(self, device: str, *, force: bool = False, clear: bool = False) -> str:
        """Manager.Reset (*clear*: lift the quarantine first); the method that worked."""
        options = {"force": Variant("b", True)} if force else {}
        if clear:
            options["clear"] = Variant("b", True)
        (method,) = await self.call(MANAGER_PATH, MANAGER_IFACE, "Reset", "sa{sv}",
                                    [device, options], timeout=OPERATION_TIMEOUT)
        return printable(str(method))

    async def plan(self, operation: str, device: str, options: dict[str, bool]
                   ) -> list[Any]:
        """Manager.Plan: (address, members, guards, rungs, modules, error, message)."""
        return await self.call(MANAGER_PATH, MANAGER_IFACE, "Plan", "ssa{sv}",
                               [operation, device,
                                {k: Variant("b", v) for k, v in options.items()}],
                               timeout=OPERATION_TIMEOUT)

    async def check_devices(self, devices: list[str]) -> list[tuple[str, str, str]]:
        """Manager.CheckDevices: (device, severity, message) rows."""
        (rows,) = await self.call(MANAGER_PATH, MANAGER_IFACE, "CheckDevices", "as",
                                  [devices], timeout=OPERATION_TIMEOUT)
        return [(printable(str(d)), str(s), printable(str(m))) for d, s, m in rows]

    # -- signals -----------------------------------------------------------------------
    async def add_match(self, rule: str) -> None:
        """Ask the bus to route signals matching *rule* to this connection."""
        await self.call(DBUS_PATH, DBUS_NAME, "AddMatch", "s", [rule],
                        destination=DBUS_NAME)

    def on_message(self, handler: Callable[[Message], None]) -> None:
        """Run *handler* for every message this connection receives."""
        def wrapped(msg: Message) -> None:
            handler(msg)  # returning None: dbus-fast goes on dispatching

        self.bus.add_message_handler(wrapped)

    async def wait_for_disconnect(self) -> None:
        """Return when the bus connection ends."""
        await self.bus.wait_for_disconnect()


def _address_of(session: bool) -> str:
    """The address the system or session bus is looked for at (dbus-fast's rules)."""
    if session:
        return os.environ.get("DBUS_SESSION_BUS_ADDRESS", "the session bus address")
    return system_bus_address()
