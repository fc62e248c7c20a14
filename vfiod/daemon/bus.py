"""vfiod's connection to the bus: dbus-fast's MessageBus with two corrections.

- InterfacesAdded/InterfacesRemoved come from the ObjectManager's path, as the
  specification says (dbus-fast sends them from the exported object's own path).
- A full socket send buffer makes the writer wait instead of dropping the connection.
"""

from __future__ import annotations

import socket
from typing import Any

from dbus_fast.aio import MessageBus
from dbus_fast.message import Message
from dbus_fast.service import ServiceInterface

from vfiod.daemon.log import log

MANAGER_PATH = "/org/vfiod1"
OBJECT_MANAGER_INTERFACE = "org.freedesktop.DBus.ObjectManager"


class _WaitWhenFull:
    """The bus socket, except that a full send buffer means "wait", not "disconnect".

    dbus-fast's writer (as dbus-next's, altdesktop/python-dbus-next#153) treats EAGAIN
    from send() as fatal and drops the connection; a burst of signals (a rescan of a
    machine with thousands of functions) can fill the buffer. Reporting 0 bytes sent
    makes the writer wait for the socket to become writable, which it already does for
    short writes.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: memoryview) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ObjectManagerBus(MessageBus):
    """vfiod's bus connection: ObjectManager signals from the manager's path, robust writes.

    dbus-fast answers GetManagedObjects itself but emits InterfacesAdded/Removed from
    the path of the object being exported; the specification (and clients that match
    on the manager's path, such as GDBus's ObjectManagerClient) want them from the
    ObjectManager object, with the object's path as the first argument. They are sent
    only once ``announce`` is set: the objects exported at start are all there when
    the name appears, and a client learns them from GetManagedObjects.
    """

    manager_path = MANAGER_PATH
    announce = False

    async def connect(self) -> ObjectManagerBus:
        """Connect, then make the writer survive a full socket buffer."""
        await super().connect()
        writer = getattr(self, "_writer", None)
        if writer is not None and isinstance(getattr(writer, "sock", None), socket.socket):
            writer.sock = _WaitWhenFull(writer.sock)
        else:  # a dbus-fast whose writer changed: keep its own behaviour
            log.debug("dbus-fast writer not recognised; EAGAIN stays fatal")
        return self

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if (self._disconnected or not self.announce
                or not path.startswith(self.manager_path + "/")):
            return

        def send(interface: ServiceInterface, values: Any, _user: Any,
                 err: Exception | None) -> None:
            if err is not None:
                log.error("cannot read the properties of %s for InterfacesAdded: %s", path, err)
                return
            self.send(Message.new_signal(
                self.manager_path, OBJECT_MANAGER_INTERFACE, "InterfacesAdded",
                "oa{sa{sv}}", [path, {interface.name: values}]))

        ServiceInterface._get_all_property_values(interface, send)

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        if (self._disconnected or not self.announce
                or not path.startswith(self.manager_path + "/")):
            return
        self.send(Message.new_signal(self.manager_path, OBJECT_MANAGER_INTERFACE,
                                     "InterfacesRemoved", "oas", [path, removed_interfaces]))
