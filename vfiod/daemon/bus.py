"""vfiod's connection to the bus: dbus-fast's MessageBus with corrections for vfiod's size.

- InterfacesAdded/InterfacesRemoved come from the ObjectManager's path, as the
  specification says (dbus-fast sends them from the exported object's own path).
- A full socket send buffer makes the writer wait instead of dropping the connection.
- GetManagedObjects is answered from the values the objects keep themselves. dbus-fast's
  generic handler calls every getter of every object through its async-aware callback
  machinery and rescans its whole result after each object: seconds of a blocked loop
  on a machine with thousands of functions. Each object's entry is kept marshalled
  until its values change, so a call costs joining them (issue 14: marshalling 4,161
  objects was most of the call).
- PropertiesChanged and DeviceChanged are sent from the object's known path (dbus-fast's
  own emitters look the interface up among every exported path, for every signal).
- GetManagedObjects with arguments is refused (InvalidArgs); dbus-fast answers it
  whatever the signature.
- Calls to the standard interfaces that expect no reply are dropped: dbus-fast's
  handlers would log a traceback for each one that is in error.
- A Properties call naming an interface, property or path longer than any D-Bus name
  gets its UnknownInterface/UnknownProperty/UnknownObject error from here, quoting a
  short printable prefix: dbus-fast's own error quotes the client's whole string back
  (100 kB in, 100 kB out).
"""

from __future__ import annotations

import inspect
import socket
import struct
from collections.abc import Mapping
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.constants import ErrorType, MessageFlag
from dbus_fast import service as dbus_fast_service
from dbus_fast.service import ServiceInterface

from vfiod.contract import MANAGER_PATH
from vfiod.daemon.log import log
from vfiod.daemon.premarshalled import PremarshalledReply, marshalled
from vfiod.printable import printable

OBJECT_MANAGER_INTERFACE = "org.freedesktop.DBus.ObjectManager"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
MANAGED_OBJECTS_SIGNATURE = "a{oa{sa{sv}}}"
#: The longest interface or member name D-Bus allows; no exported one is longer.
MAX_NAME = 255
#: How much of a client's string an error quotes back.
QUOTED = 64
_PROPERTIES_SIGNATURES = {"Get": "ss", "Set": "ssv", "GetAll": "s"}
_STANDARD_INTERFACES = frozenset({PROPERTIES_INTERFACE, OBJECT_MANAGER_INTERFACE,
                                  "org.freedesktop.DBus.Introspectable",
                                  "org.freedesktop.DBus.Peer"})

#: (D-Bus name, signature) of the readable properties of each interface class, in the
#: order dbus-fast lists them, which is the order of its own replies.
_READABLE: dict[type, tuple[tuple[str, str], ...]] = {}


class _MembersOnce:
    """dbus-fast's view of the inspect module, with getmembers of a class computed once.

    ServiceInterface.__init__ lists its class's members (inspect.getmembers) to find the
    D-Bus methods, properties and signals, for every object: on 4,096 Device objects
    that was two thirds of making them, a fifth of vfiod's own start (issue 14's
    profile). A class's D-Bus members are fixed when it is defined, so one listing per
    class gives each object the same answer.
    """

    def __init__(self) -> None:
        self._members: dict[type, list[tuple[str, Any]]] = {}

    def getmembers(self, obj: Any, predicate: Any = None) -> list[tuple[str, Any]]:
        """inspect.getmembers, remembered per class when asked without a predicate."""
        if predicate is not None or not isinstance(obj, type):
            return inspect.getmembers(obj, predicate)
        found = self._members.get(obj)
        if found is None:
            found = self._members[obj] = inspect.getmembers(obj)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


# dbus-fast's service module looks the name up at each call (a module global).
if getattr(dbus_fast_service, "inspect", None) is inspect:
    dbus_fast_service.inspect = _MembersOnce()  # type: ignore[attr-defined]


class PropertiesInterface(ServiceInterface):
    """A ServiceInterface that hands the bus all its readable properties at once.

    Subclasses give their values by D-Bus name (``property_values``). Names, signatures
    and their order come from the class's own introspection data, which dbus-fast
    builds from the same ``@dbus_property`` declarations it serves Get and GetAll from,
    so a reply built from them has the content of dbus-fast's generic one.
    """

    #: True when property_values() returns the same mapping until a value changes and
    #: then a new one, never changing one in place: GetManagedObjects may then reuse
    #: the object's marshalled entry while the mapping is the same.
    keeps_values: bool = False

    def property_values(self) -> Mapping[str, Any]:
        """Every readable property's plain value, by D-Bus name."""
        raise NotImplementedError

    def readable_properties(self) -> tuple[tuple[str, str], ...]:
        """(name, signature) of the readable properties, in dbus-fast's order."""
        cls = type(self)
        found = _READABLE.get(cls)
        if found is None:
            found = _READABLE[cls] = tuple(
                (p.name, p.signature) for p in self.introspect().properties
                if p.access.readable())
        return found

    def property_variants(self) -> dict[str, Variant]:
        """Every readable property as a Variant, by D-Bus name (what GetAll returns)."""
        values = self.property_values()
        return {name: Variant(signature, values[name])
                for name, signature in self.readable_properties()}


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

    GetManagedObjects itself is answered here too, from the values PropertiesInterface
    objects keep, when every object below the path is one; dbus-fast's generic handler
    answers otherwise.
    """

    manager_path = MANAGER_PATH
    announce = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: What is exported at each path, in dbus-fast's order (paths as first
        #: exported); kept by export/unexport, as dbus-fast's own table is private.
        self.exported: dict[str, dict[str, ServiceInterface]] = {}
        #: Answer GetManagedObjects from PropertiesInterface objects. False leaves every
        #: call to dbus-fast's generic handler (the tests compare the two answers).
        self.managed_objects_from_cache = True
        #: Each object's marshalled GetManagedObjects entry, by path, with the value
        #: mappings it was made from (reused while every one of them is the same).
        self._entries: dict[str, tuple[list[tuple[str, Mapping[str, Any]]], bytes]] = {}

    async def connect(self) -> ObjectManagerBus:
        """Connect, make the writer survive a full socket buffer, answer GetManagedObjects."""
        await super().connect()
        writer = getattr(self, "_writer", None)
        if writer is not None and isinstance(getattr(writer, "sock", None), socket.socket):
            writer.sock = _WaitWhenFull(writer.sock)
        else:  # a dbus-fast whose writer changed: keep its own behaviour
            log.debug("dbus-fast writer not recognised; EAGAIN stays fatal")
        self.add_message_handler(self._drop_unanswered_standard_calls)
        self.add_message_handler(self._answer_get_managed_objects)
        self.add_message_handler(self._answer_overlong_property_names)
        return self

    # -- what is exported -----------------------------------------------------------
    def export(self, path: str, interface: ServiceInterface) -> None:
        """Export *interface* at *path* (dbus-fast's export), and note it."""
        super().export(path, interface)
        self.exported.setdefault(path, {})[interface.name] = interface

    def unexport(self, path: str, interface: ServiceInterface | str | None = None) -> None:
        """Unexport one interface at *path*, or all of them (dbus-fast's unexport)."""
        super().unexport(path, interface)
        self._entries.pop(path, None)
        interfaces = self.exported.get(path)
        if interfaces is None:
            return
        if interface is None:
            interfaces.clear()
        else:
            name = interface if isinstance(interface, str) else interface.name
            interfaces.pop(name, None)
        if not interfaces:
            del self.exported[path]

    # -- GetManagedObjects ------------------------------------------------------------
    def managed_objects_body(self, path: str) -> bytes | None:
        """GetManagedObjects' reply body for *path* (the objects below it, every object
        for ``/``, as dbus-fast's generic handler lists them), marshalled: each object's
        entry as kept (an object that changed, or does not keep its variants, is
        marshalled anew), joined. None when an object below *path* is not a
        PropertiesInterface.

        The entries of an a{...} start 8-aligned and hold nothing aligned wider, so an
        entry's bytes do not depend on where it lies: the body is the array's length,
        the padding to 8, and the entries with padding between them.
        """
        prefix = path + "/"
        parts: list[bytes] = []
        length = 0
        for node, interfaces in self.exported.items():
            if path != "/" and not node.startswith(prefix):
                continue
            entry = self._entry(node, interfaces)
            if entry is None:
                return None
            pad = -length % 8
            if pad:
                parts.append(b"\0" * pad)
            parts.append(entry)
            length += pad + len(entry)
        return struct.pack("<I", length) + b"\0" * 4 + b"".join(parts)

    def _entry(self, node: str, interfaces: Mapping[str, ServiceInterface]) -> bytes | None:
        """One object's marshalled ``{o: a{sa{sv}}}`` entry (see managed_objects_body)."""
        values: list[tuple[str, Mapping[str, Any]]] = []
        reusable = True
        for name, interface in interfaces.items():
            if not isinstance(interface, PropertiesInterface):
                return None
            values.append((name, interface.property_values()))
            reusable = reusable and interface.keeps_values
        cached = self._entries.get(node)
        if (reusable and cached is not None and len(cached[0]) == len(values)
                and all(a[0] == b[0] and a[1] is b[1] for a, b in zip(cached[0], values))):
            return cached[1]
        objects = {node: {name: interface.property_variants()
                          for name, interface in interfaces.items()}}
        # Marshalled as a one-entry array: the entry follows the length and its padding.
        entry = marshalled(MANAGED_OBJECTS_SIGNATURE, [objects])[8:]
        if reusable:
            self._entries[node] = (values, entry)
        return entry

    def _answer_get_managed_objects(self, msg: Message) -> Message | bool | None:
        """Message handler: answer GetManagedObjects, or leave the message to dbus-fast.

        Matches what dbus-fast's dispatcher sends to its generic handler: the method on
        the ObjectManager interface at any path, whatever the signature.
        """
        if (msg.member != "GetManagedObjects" or msg.interface != OBJECT_MANAGER_INTERFACE
                or msg.message_type is not MessageType.METHOD_CALL or msg.path is None):
            return None
        if msg.flags.value & MessageFlag.NO_REPLY_EXPECTED.value:
            return True  # nothing to send
        if msg.signature:
            return Message.new_error(msg, ErrorType.INVALID_ARGS.value,
                                     "GetManagedObjects takes no arguments, not "
                                     f"{quoted(msg.signature)}")
        if not self.managed_objects_from_cache:
            return None
        try:
            body = self.managed_objects_body(msg.path)
        except Exception:  # noqa: BLE001 (a bug here must not cost the client its answer)
            log.exception("GetManagedObjects on %s: falling back to dbus-fast's handler",
                          msg.path)
            return None
        if body is None:
            return None
        self.send(PremarshalledReply.to(msg, MANAGED_OBJECTS_SIGNATURE, body))
        return True

    # -- standard interfaces called with no reply expected ---------------------------
    def _drop_unanswered_standard_calls(self, msg: Message) -> bool | None:
        """Message handler: a call to a standard interface (Properties, Introspectable,
        Peer) that expects no reply is dropped here.

        Every vfiod property is read-only, so none of these calls can change anything;
        dbus-fast's own handlers raise their errors (an unknown interface, a wrong
        signature, Set of a read-only property) past the reply nobody wants, and each
        such call by any user logged "Unexpected error processing message" with a
        traceback (issue 11.5, found again by the torture suite).
        """
        if (msg.message_type is MessageType.METHOD_CALL
                and msg.flags.value & MessageFlag.NO_REPLY_EXPECTED.value
                and msg.interface in _STANDARD_INTERFACES - {OBJECT_MANAGER_INTERFACE}):
            return True
        return None

    # -- Properties errors that would echo the client's input ------------------------
    def _answer_overlong_property_names(self, msg: Message) -> Message | bool | None:
        """Message handler: the error for a Properties call naming an interface, a
        property or a path longer than any exported one; None leaves the call to
        dbus-fast (whose errors quote at most MAX_NAME characters of it then)."""
        if (msg.interface != PROPERTIES_INTERFACE
                or msg.message_type is not MessageType.METHOD_CALL
                or _PROPERTIES_SIGNATURES.get(msg.member or "") != msg.signature
                or msg.path is None):
            return None
        interface = msg.body[0]
        prop = msg.body[1] if msg.member in ("Get", "Set") else ""
        if max(len(interface), len(prop), len(msg.path)) <= MAX_NAME:
            return None
        if msg.flags.value & MessageFlag.NO_REPLY_EXPECTED.value:
            return True
        # The order of dbus-fast's own checks: the object, the interface, the property.
        exported = self.exported.get(msg.path)
        if exported is None:
            return Message.new_error(msg, ErrorType.UNKNOWN_OBJECT.value,
                                     f"no interfaces at path: {quoted(msg.path)}")
        if interface not in exported and interface not in _STANDARD_INTERFACES:
            return Message.new_error(msg, ErrorType.UNKNOWN_INTERFACE.value,
                                     f"could not find an interface {quoted(interface)} "
                                     f"at path: {quoted(msg.path)}")
        return Message.new_error(msg, ErrorType.UNKNOWN_PROPERTY.value,
                                 f"interface {quoted(interface)} does not have property "
                                 f"{quoted(prop)}")

    # -- signals ----------------------------------------------------------------------
    def send_signal(self, path: str, interface: str, member: str, signature: str,
                    body: list[Any]) -> None:
        """Send a signal from the object at *path*.

        What a ServiceInterface's signal method sends, without dbus-fast's search of
        every exported path for the sender's own (for every signal).
        """
        if self.connected:
            self.send(Message.new_signal(path, interface, member, signature, body))

    def send_properties_changed(self, path: str, interface: str,
                                changed: dict[str, Variant]) -> None:
        """PropertiesChanged for the object at *path*, with the changed values only
        (what ServiceInterface.emit_properties_changed sends)."""
        if changed:
            self.send_signal(path, PROPERTIES_INTERFACE, "PropertiesChanged", "sa{sv}as",
                             [interface, changed, []])

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

        if isinstance(interface, PropertiesInterface):
            send(interface, interface.property_variants(), None, None)
        else:
            ServiceInterface._get_all_property_values(interface, send)

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        if (self._disconnected or not self.announce
                or not path.startswith(self.manager_path + "/")):
            return
        self.send(Message.new_signal(self.manager_path, OBJECT_MANAGER_INTERFACE,
                                     "InterfacesRemoved", "oas", [path, removed_interfaces]))


def quoted(text: str) -> str:
    """A client's string in an error message: quoted, at most QUOTED characters of it,
    control characters escaped."""
    shown = printable(text[:QUOTED])
    more = f"… ({len(text)} characters)" if len(text) > QUOTED else ""
    return f'"{shown}"{more}'
