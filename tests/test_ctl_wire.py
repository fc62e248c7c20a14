"""vfioctl's blocking D-Bus client: the wire format against dbus-fast's, and addresses."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast._private.unmarshaller import Unmarshaller

from vfiod.ctl.devices import unwrap
from vfiod.ctl.wire import (Reader, UnsupportedAddress, method_call, run_now,
                            socket_address)

STATUS_ROWS = [["0000:06:00.0", "10de:1b06", "NVIDIA GP102 [GeForce GTX 1080 Ti]",
                "nvidia", "host", 31, ""],
               ["0000:06:00.1", "10de:10ef", "naïve ✓ name", "", "guest", -1,
                "qemu-system-x86 (pid 4242)"]]
MANAGED = {"/org/vfiod1/device/pci_0000_06_00_0": {"org.vfiod1.Device": {
    "Address": Variant("s", "0000:06:00.0"), "VendorId": Variant("q", 0x10DE),
    "Class": Variant("u", 0x030000), "IommuGroup": Variant("i", -1),
    "HolderPid": Variant("u", 0), "ResetMethods": Variant("as", ["flr", "bus"]),
    "Healthy": Variant("b", True), "BootVga": Variant("b", False),
    "Big": Variant("t", 2**40), "Ratio": Variant("d", 0.5), "Byte": Variant("y", 7),
    "Nested": Variant("v", Variant("s", "inner")),
    "Pair": Variant("(sx)", ["a", -5]), "Map": Variant("a{sv}", {"k": Variant("n", -2)})}},
    "/org/vfiod1/device/pci_0000_00_00_0": {"org.vfiod1.Device": {}}}


def read_body(signature: str, body: list[object]) -> list[object]:
    """What wire's Reader makes of a reply dbus-fast marshalled."""
    msg = Message(message_type=MessageType.METHOD_RETURN, reply_serial=2,
                  destination=":1.5", signature=signature, body=body, serial=9)
    data = bytes(msg._marshall(False))
    fields_len = int.from_bytes(data[12:16], "little")
    header_len = 16 + fields_len + (-(16 + fields_len) % 8)
    return Reader(data, header_len, little=True).read(signature)


def test_status_rows_read_as_dbus_fast_wrote_them() -> None:
    assert read_body("a(sssssis)", [STATUS_ROWS]) == [STATUS_ROWS]


def test_managed_objects_read_as_plain_values_with_variants_unwrapped() -> None:
    (objects,) = read_body("a{oa{sa{sv}}}", [MANAGED])
    assert objects == unwrap(MANAGED)
    assert objects["/org/vfiod1/device/pci_0000_06_00_0"]["org.vfiod1.Device"][
        "Healthy"] is True


def test_an_empty_array_and_several_arguments_read_in_order() -> None:
    assert read_body("asia{sv}s", [[], 3, {}, "end"]) == [[], 3, {}, "end"]


def test_a_method_call_is_what_dbus_fast_reads() -> None:
    data = method_call(7, "org.vfiod1", "/org/vfiod1/device/pci_0000_06_00_0",
                       "org.freedesktop.DBus.Properties", "GetAll", ["org.vfiod1.Device"])
    msg = Unmarshaller(io.BytesIO(data)).unmarshall()
    assert msg is not None
    assert (msg.message_type, msg.serial, msg.destination, msg.path, msg.interface,
            msg.member, msg.signature, msg.body) == (
        MessageType.METHOD_CALL, 7, "org.vfiod1", "/org/vfiod1/device/pci_0000_06_00_0",
        "org.freedesktop.DBus.Properties", "GetAll", "s", ["org.vfiod1.Device"])


def test_a_call_without_arguments_has_no_signature() -> None:
    msg = Unmarshaller(io.BytesIO(method_call(1, "org.vfiod1", "/org/vfiod1",
                                              "org.vfiod1.Manager", "Status"))).unmarshall()
    assert msg is not None and msg.member == "Status" and msg.signature == "" \
        and msg.body == []


@pytest.mark.parametrize(("address", "socket"), [
    ("unix:path=/run/dbus/system_bus_socket", "/run/dbus/system_bus_socket"),
    ("unix:path=/tmp/a%20b,guid=00ff", "/tmp/a b"),
    ("unix:abstract=/tmp/dbus-x,guid=1", "\0/tmp/dbus-x"),
    ("tcp:host=localhost,port=1;unix:path=/s", "/s"),
])
def test_the_socket_of_a_bus_address(address: str, socket: str) -> None:
    assert socket_address(address) == socket


@pytest.mark.parametrize("address", ["tcp:host=localhost,port=1", "nonsense", ""])
def test_an_address_without_a_unix_socket_is_left_to_dbus_fast(address: str) -> None:
    with pytest.raises(UnsupportedAddress):
        socket_address(address)


def test_run_now_returns_what_a_coroutine_that_never_waits_returns() -> None:
    async def answer() -> int:
        return 42

    assert run_now(answer()) == 42


def test_run_now_refuses_a_coroutine_that_waits() -> None:
    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError):
        run_now(waits())


def test_vfioctl_status_imports_neither_dbus_fast_nor_asyncio() -> None:
    code = ("import sys; from vfiod.ctl import main; main.main(['--address', "
            "'unix:path=/nonexistent/socket', 'status']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('asyncio', 'dbus_fast', 'pydantic', 'ssl')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _fake_bus(path: str, big: list[list[object]]) -> None:
    """A one-connection bus: SASL, Hello, a NameAcquired signal, then Status answered
    with *big* rows (megabytes, so the reply arrives in many reads)."""
    import socket as socketlib

    server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            data = b""
            while b"BEGIN\r\n" not in data:
                data += conn.recv(4096)
                if data.startswith(b"\0AUTH") and b"OK" not in data and b"\r\n" in data:
                    conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
                    data += b"OK"
            rest = data.split(b"BEGIN\r\n", 1)[1]
            for reply_body in (("s", [":1.7"]), ("a(sssssis)", [big])):
                while True:
                    msg = Unmarshaller(io.BytesIO(rest)).unmarshall() if rest else None
                    if msg is not None:
                        break
                    rest += conn.recv(65536)
                rest = rest[len(msg._marshall(False)):]
                conn.sendall(bytes(Message.new_signal("/org/freedesktop/DBus",
                                                      "org.freedesktop.DBus", "NameAcquired",
                                                      "s", [":1.7"])._marshall(False)))
                reply = Message(message_type=MessageType.METHOD_RETURN, serial=100,
                                reply_serial=msg.serial, signature=reply_body[0],
                                body=reply_body[1])
                conn.sendall(bytes(reply._marshall(False)))

    import threading

    threading.Thread(target=serve, daemon=True).start()


def test_a_reply_of_megabytes_read_in_many_pieces_after_a_signal(tmp_path) -> None:
    from vfiod.ctl.wire import WireClient, run_now

    rows = [[f"0000:{i // 256:02x}:{i % 256 // 8:02x}.{i % 8}", "15b3:1018", "x" * 400,
             "mlx5_core", "host", i, ""] for i in range(8000)]
    _fake_bus(str(tmp_path / "bus"), rows)
    client = WireClient.connect(address=f"unix:path={tmp_path}/bus", timeout=30)
    try:
        got = run_now(client.status_rows())
    finally:
        client.close()
    assert [list(r) for r in got] == rows
