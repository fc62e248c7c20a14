"""A blocking D-Bus client in the standard library, for vfioctl's queries.

``vfioctl status`` makes three calls and prints a table. dbus-fast's client needs
asyncio, and importing the two (asyncio pulls in ssl, concurrent.futures and more) cost
more than the rest of vfioctl together (issue 14's profile: 56 ms of a 104 ms run). This
module speaks the protocol itself over a Unix socket: SASL EXTERNAL, Hello, method calls,
and the reply's body unmarshalled into plain Python values (a variant becomes its value,
a struct a list), which is all that a table needs.

``WireClient`` and ``VfiodClient`` share the query methods (``Queries``: ``status_rows``,
``devices``, ``device``, ``manager_properties``); WireClient's are coroutines that never
suspend, so the commands run on it unchanged through ``run_now``, without an event loop;
errors are the same CtlErrors with the same messages and exit codes.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

from vfiod.contract import (BUS_NAME, DEVICE_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH,
                             device_path)
from vfiod.ctl import exitcodes
from vfiod.ctl.devices import DeviceProperties
from vfiod.ctl.exitcodes import CtlError

PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"
#: Where the system bus is when DBUS_SYSTEM_BUS_ADDRESS is unset (the D-Bus spec's).
SYSTEM_BUS_DEFAULT = "unix:path=/var/run/dbus/system_bus_socket"
#: How long a query may take before vfioctl gives up (D-Bus's usual default).
QUERY_TIMEOUT = 25.0
#: Errors that mean vfiod has no such object (VfiodClient.device returns None).
UNKNOWN_OBJECT_ERRORS = frozenset({
    "org.freedesktop.DBus.Error.UnknownObject",
    "org.freedesktop.DBus.Error.UnknownInterface",
    "org.freedesktop.DBus.Error.UnknownMethod",
})

# Message types and header fields (the D-Bus specification's numbers).
METHOD_CALL, METHOD_RETURN, ERROR = 1, 2, 3
_PATH, _INTERFACE, _MEMBER, _ERROR_NAME, _REPLY_SERIAL, _DESTINATION, _SIGNATURE = (
    1, 2, 3, 4, 5, 6, 8)
#: The largest message the specification allows.
MAX_MESSAGE = 128 * 1024 * 1024

_FIXED = {"y": (1, "B"), "b": (4, "I"), "n": (2, "h"), "q": (2, "H"), "i": (4, "i"),
          "u": (4, "I"), "x": (8, "q"), "t": (8, "Q"), "d": (8, "d"), "h": (4, "I")}
_ALIGN = {**{c: size for c, (size, _) in _FIXED.items()}, "s": 4, "o": 4, "g": 1, "a": 4,
          "(": 8, "{": 8, "v": 1}

_T = TypeVar("_T")


class WireError(Exception):
    """The connection failed or a message broke the protocol."""


class UnsupportedAddress(WireError):
    """A bus address with no ``unix:`` entry (tcp, launchd...): dbus-fast's client
    handles those."""


# -- addresses --------------------------------------------------------------------------

def socket_address(address: str) -> str:
    """The socket of the first ``unix:`` entry of a D-Bus address (an abstract one
    starts with NUL); WireError for an address this client cannot use."""
    for entry in address.split(";"):
        transport, _, params = entry.partition(":")
        if transport != "unix":
            continue
        values = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if "path" in values:
            return unquote(values["path"])
        if "abstract" in values:
            return "\0" + unquote(values["abstract"])
    raise UnsupportedAddress(f"no unix:path or unix:abstract entry in {address!r}")


# -- marshalling -------------------------------------------------------------------------

def _pad(buf: bytearray, align: int) -> None:
    buf.extend(b"\0" * (-len(buf) % align))


def _put_string(buf: bytearray, kind: str, text: str) -> None:
    data = text.encode()
    if kind == "g":
        buf.append(len(data))
    else:
        _pad(buf, 4)
        buf.extend(struct.pack("<I", len(data)))
    buf.extend(data + b"\0")


def method_call(serial: int, destination: str, path: str, interface: str, member: str,
                strings: Sequence[str] = ()) -> bytes:
    """A METHOD_CALL message (little-endian) whose arguments are strings only."""
    body = bytearray()
    for text in strings:
        _put_string(body, "s", text)
    fields = bytearray()
    for code, kind, value in ((_PATH, "o", path), (_INTERFACE, "s", interface),
                              (_MEMBER, "s", member), (_DESTINATION, "s", destination),
                              (_SIGNATURE, "g", "s" * len(strings))):
        if not value:
            continue
        _pad(fields, 8)
        fields.append(code)
        _put_string(fields, "g", kind)
        _put_string(fields, kind, value)
    header = bytearray(struct.pack("<cBBBIII", b"l", METHOD_CALL, 0, 1, len(body), serial,
                                   len(fields)))
    header.extend(fields)
    _pad(header, 8)
    return bytes(header + body)


class Reader:
    """Unmarshals values of a signature from one message's bytes."""

    def __init__(self, data: bytes, offset: int, little: bool) -> None:
        self.data = data
        self.pos = offset
        self.order = "<" if little else ">"

    def align(self, n: int) -> None:
        """Skip the padding up to a multiple of *n*."""
        self.pos += -self.pos % n

    def read(self, signature: str) -> list[Any]:
        """Every complete type of *signature*, in order."""
        values = []
        i = 0
        while i < len(signature):
            end = _type_end(signature, i)
            values.append(self.value(signature[i:end]))
            i = end
        return values

    def value(self, sig: str) -> Any:
        """One value of the single complete type *sig*."""
        code = sig[0]
        fixed = _FIXED.get(code)
        if fixed is not None:
            size, fmt = fixed
            self.align(size)
            (found,) = struct.unpack_from(self.order + fmt, self.data, self.pos)
            self.pos += size
            return bool(found) if code == "b" else found
        if code in "so":
            self.align(4)
            (length,) = struct.unpack_from(self.order + "I", self.data, self.pos)
            start = self.pos + 4
            self.pos = start + length + 1
            return self.data[start:start + length].decode("utf-8", "replace")
        if code == "g":
            length = self.data[self.pos]
            start = self.pos + 1
            self.pos = start + length + 1
            return self.data[start:start + length].decode("ascii", "replace")
        if code == "v":
            inner = self.value("g")
            return self.value(inner)
        if code == "(":
            self.align(8)
            return self.read(sig[1:-1])
        if code == "a":
            self.align(4)
            (length,) = struct.unpack_from(self.order + "I", self.data, self.pos)
            self.pos += 4
            element = sig[1:]
            self.align(_ALIGN[element[0]])
            end = self.pos + length
            if element[0] == "{":
                key_sig, value_sig = _split_pair(element[1:-1])
                entries: dict[Any, Any] = {}
                while self.pos < end:
                    self.align(8)
                    key = self.value(key_sig)
                    entries[key] = self.value(value_sig)
                return entries
            items = []
            while self.pos < end:
                items.append(self.value(element))
            return items
        raise WireError(f"unknown D-Bus type code {code!r}")


def _type_end(signature: str, i: int) -> int:
    """The index just past the complete type starting at *i*."""
    code = signature[i]
    if code == "a":
        return _type_end(signature, i + 1)
    if code in "({":
        close = ")" if code == "(" else "}"
        depth = 0
        for j in range(i, len(signature)):
            if signature[j] == code:
                depth += 1
            elif signature[j] == close:
                depth -= 1
                if depth == 0:
                    return j + 1
        raise WireError(f"unbalanced signature {signature!r}")
    return i + 1


def _split_pair(inner: str) -> tuple[str, str]:
    key_end = _type_end(inner, 0)
    return inner[:key_end], inner[key_end:]


class Reply:
    """A METHOD_RETURN or ERROR message: its error name (None for a return) and body."""

    def __init__(self, error_name: str | None, body: list[Any]) -> None:
        self.error_name = error_name
        self.body = body


# -- the connection ----------------------------------------------------------------------

class Connection:
    """One authenticated connection to a bus; blocking calls with a deadline."""

    def __init__(self, address: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._serial = 0
        self._buf = bytearray()  # appended to in place: a reply may be megabytes
        self.set_deadline(timeout)
        try:
            self._remaining()
            self.sock.connect(socket_address(address))
            self._authenticate()
            self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                      "org.freedesktop.DBus", "Hello")
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()

    def set_deadline(self, seconds: float) -> None:
        """Let what follows take *seconds* in all (TimeoutError after that)."""
        self._deadline = time.monotonic() + seconds

    def _remaining(self) -> None:
        """Bound the socket's next operation by the deadline (TimeoutError when past)."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(left)

    def _authenticate(self) -> None:
        uid = str(os.geteuid()).encode().hex()
        self._remaining()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        line = self._line()
        if not line.startswith(b"OK "):
            raise WireError(f"the bus refused authentication: {line.decode(errors='replace')}")
        self._remaining()
        self.sock.sendall(b"BEGIN\r\n")

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        end = self._buf.index(b"\r\n")
        line = bytes(self._buf[:end])
        del self._buf[:end + 2]
        return line

    def _fill(self) -> None:
        self._remaining()
        chunk = self.sock.recv(65536)
        if not chunk:
            raise WireError("the bus closed the connection")
        self._buf += chunk

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def call(self, destination: str, path: str, interface: str, member: str,
             strings: Sequence[str] = ()) -> Reply:
        """Send a method call and return its reply (other messages are skipped)."""
        self._serial += 1
        serial = self._serial
        self._remaining()
        self.sock.sendall(method_call(serial, destination, path, interface, member, strings))
        while True:
            kind, fields, body = self._message()
            if fields.get(_REPLY_SERIAL) != serial or kind not in (METHOD_RETURN, ERROR):
                continue  # NameAcquired and other signals
            signature = fields.get(_SIGNATURE, "")
            error_name = (fields.get(_ERROR_NAME) or "") if kind == ERROR else None
            return Reply(error_name, body(signature))

    def _message(self) -> tuple[int, dict[int, Any], Any]:
        head = self._exactly(16)
        little = head[:1] == b"l"
        order = "<" if little else ">"
        kind = head[1]
        body_len, _serial, fields_len = struct.unpack_from(order + "III", head, 4)
        header_len = 16 + fields_len + (-(16 + fields_len) % 8)
        if header_len + body_len > MAX_MESSAGE:
            raise WireError("a message larger than D-Bus allows")
        data = head + self._exactly(header_len - 16 + body_len)
        reader = Reader(data, 12, little)
        fields = {code: value for code, value in reader.value("a(yv)")}
        return kind, fields, lambda sig: Reader(data, header_len, little).read(sig)


# -- vfioctl's client --------------------------------------------------------------------

def run_now(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (one awaiting only a WireClient) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the command waited for something a WireClient does not give")


def bus_description(session: bool, address: str | None) -> str:
    """How error messages name the bus: ``the system bus``, ``the bus at ADDR``."""
    if address:
        return f"the bus at {address}"
    return "the session bus" if session else "the system bus"


def system_bus_address() -> str:
    """Where the system bus is: DBUS_SYSTEM_BUS_ADDRESS, else the D-Bus spec's default
    (dbus-fast's rule too: an empty variable counts as unset)."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT


def error_for(name: str, text: str, destination: str, where: str) -> CtlError:
    """The CtlError for an error reply *name* with message *text* (vfioctl's rules: a
    bus error that means nobody owns org.vfiod1 is "cannot reach vfiod")."""
    text = " ".join((text or name).split())  # one line, whatever the sender put in
    if destination == BUS_NAME and exitcodes.is_unreachable(name):
        return unreachable(where, text, name)
    return CtlError(text or name, exitcodes.exit_code_for(name), name)


def unreachable(where: str, detail: str, dbus_name: str = "") -> CtlError:
    """vfiod cannot be reached on *where* (the connection failed or broke, or nobody
    owns its name): exit 9."""
    return CtlError(f"cannot reach vfiod on {where}: {detail} (is vfiod running?)",
                    exitcodes.UNREACHABLE, dbus_name)


def connect_timed_out(where: str, limit: float, explicit: bool) -> CtlError:
    """The bus took the connection but did not complete it within *limit* seconds
    (*explicit*: the limit is --timeout's): nothing says vfiod is down."""
    given = " (--timeout)" if explicit else ""
    return CtlError(f"timed out: {where} did not complete the connection within "
                    f"{limit:g} s{given}", exitcodes.TIMEOUT)


def no_answer(member: str, limit: float) -> CtlError:
    """vfiod did not answer a call of *member* within *limit* seconds."""
    return CtlError(f"vfiod did not answer {member} within {limit:g} s "
                    "(it may still finish; see vfioctl status)", exitcodes.TIMEOUT)


def failure_reason(exc: BaseException) -> str:
    """A failed connection's reason, in one line (an OSError's strerror)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


class Queries:
    """vfiod's query methods (``status_rows``, ``devices``, ``device``,
    ``manager_properties``), for both clients: each answers ``query`` and ``plain``."""

    async def query(self, path: str, interface: str, member: str,
                    strings: Sequence[str] = ()) -> list[Any]:
        """Call a method of vfiod with string arguments; its reply body."""
        raise NotImplementedError

    @staticmethod
    def plain(value: Any) -> Any:
        """A reply's value with every variant its value (WireClient's are already)."""
        return value

    async def status_rows(self) -> list[tuple[str, str, str, str, str, int, str]]:
        """Manager.Status(): one (address, ids, name, driver, state, group, holder) row
        per PCI function."""
        (rows,) = await self.query(MANAGER_PATH, MANAGER_INTERFACE, "Status")
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def devices(self) -> dict[str, DeviceProperties]:
        """Every Device object's properties (ObjectManager), by address."""
        (objects,) = await self.query(MANAGER_PATH, OBJECT_MANAGER_IFACE, "GetManagedObjects")
        found: dict[str, DeviceProperties] = {}
        for interfaces in objects.values():
            props = interfaces.get(DEVICE_INTERFACE)
            if props is not None:
                info = DeviceProperties.from_properties(self.plain(props))
                found[info.address] = info
        return found

    async def device(self, address: str) -> DeviceProperties | None:
        """One Device object's properties; None when vfiod has no such object."""
        try:
            (props,) = await self.query(device_path(address), PROPERTIES_IFACE, "GetAll",
                                        [DEVICE_INTERFACE])
        except CtlError as err:
            if err.dbus_name in UNKNOWN_OBJECT_ERRORS:
                return None
            raise
        return DeviceProperties.from_properties(self.plain(props))

    async def manager_properties(self) -> dict[str, Any]:
        """Version, IommuEnabled, Simulated."""
        (props,) = await self.query(MANAGER_PATH, PROPERTIES_IFACE, "GetAll",
                                    [MANAGER_INTERFACE])
        return self.plain(props)  # type: ignore[no-any-return]


class WireClient(Queries):
    """vfiod's query methods over a blocking connection (see the module's docstring)."""

    def __init__(self, connection: Connection, where: str, timeout: float | None) -> None:
        self.connection = connection
        self.where = where
        self.timeout = timeout

    @classmethod
    def connect(cls, *, session: bool = False, address: str | None = None,
                timeout: float | None = None) -> WireClient:
        """Connect as VfiodClient.connect does; the same CtlErrors when that fails.

        UnsupportedAddress: the bus is not at a Unix socket (VfiodClient then)."""
        where = bus_description(session, address)
        if address:
            target = address
        elif session:
            target = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
            if not target:
                raise CtlError(f"cannot reach vfiod on {where}: DBUS_SESSION_BUS_ADDRESS "
                               "is not set", exitcodes.UNREACHABLE)
        else:
            target = system_bus_address()
        socket_address(target)  # UnsupportedAddress before any connection
        limit = timeout or QUERY_TIMEOUT
        try:
            connection = Connection(target, limit)
        except (TimeoutError, socket.timeout):
            raise connect_timed_out(where, limit, bool(timeout)) from None
        except (OSError, WireError) as exc:
            shown = "" if address else f"{target}: "
            raise unreachable(where, shown + failure_reason(exc)) from None
        return cls(connection, where, timeout)

    def close(self) -> None:
        """Disconnect (idempotent)."""
        self.connection.close()

    def call(self, path: str, interface: str, member: str, strings: Sequence[str] = ()
             ) -> list[Any]:
        """Call a method of vfiod and return its reply body; CtlError for any error."""
        limit = self.timeout or QUERY_TIMEOUT
        try:
            self.connection.set_deadline(limit)
            reply = self.connection.call(BUS_NAME, path, interface, member, strings)
        except (TimeoutError, socket.timeout):
            raise no_answer(member, limit) from None
        except (OSError, WireError) as exc:
            raise unreachable(self.where, failure_reason(exc)) from None
        if reply.error_name is not None:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise error_for(reply.error_name, text, BUS_NAME, self.where)
        return reply.body

    # The query methods (Queries), as coroutines that never suspend.
    async def query(self, path: str, interface: str, member: str,
                    strings: Sequence[str] = ()) -> list[Any]:
        return self.call(path, interface, member, strings)
