"""Manager.Status answered from a body marshalled once per published status list."""

from __future__ import annotations

import io

from dbus_fast import Message, MessageType
from dbus_fast._private.unmarshaller import Unmarshaller
from dbus_fast.constants import MessageFlag

from vfiod.daemon.status_reply import StatusReply
from vfiod.records import DeviceStatus, State


def status(address: str, state: State = State.HOST, driver: str = "nvidia",
           holder: str = "") -> DeviceStatus:
    return DeviceStatus(address=address, vendor_id=0x10DE, device_id=0x1B06,
                        name="GP102 [GeForce GTX 1080 Ti]", class_code=0x030000,
                        driver=driver, host_driver="nvidia", state=state, iommu_group=31,
                        holder=holder, holder_pid=0, reset_methods=["bus"], healthy=True,
                        boot_vga=False, is_bridge=False)


class _Bus:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.handlers: list[object] = []

    def add_message_handler(self, handler: object) -> None:
        self.handlers.append(handler)

    def send(self, msg: Message) -> None:
        msg.serial = 77
        self.sent.append(bytes(msg._marshall(False)))  # what dbus-fast's writer sends


def call(member: str = "Status", path: str = "/org/vfiod1", signature: str = "",
         body: list[object] | None = None, flags: MessageFlag = MessageFlag.NONE) -> Message:
    return Message(destination="org.vfiod1", path=path, interface="org.vfiod1.Manager",
                   member=member, signature=signature, body=body or [], serial=12,
                   sender=":1.42", flags=flags)


def received(data: bytes) -> Message:
    msg = Unmarshaller(io.BytesIO(data)).unmarshall()
    assert msg is not None
    return msg


def test_the_reply_is_the_rows_dbus_fast_would_send_to_the_caller() -> None:
    rows = [status("0000:06:00.0"), status("0000:06:00.1", State.GUEST, "vfio-pci",
                                           "qemu-system-x86 (pid 4242)")]
    bus = _Bus()
    assert StatusReply(bus, lambda: rows).handle(call()) is True  # type: ignore[arg-type]
    reply = received(bus.sent[0])
    assert reply.message_type is MessageType.METHOD_RETURN
    assert (reply.reply_serial, reply.destination, reply.signature, reply.serial) == \
        (12, ":1.42", "a(sssssis)", 77)
    assert [list(r) for r in reply.body[0]] == [list(s.status_row()) for s in rows]
    # Byte for byte what dbus-fast makes of the same answer.
    generic = Message.new_method_return(call(), "a(sssssis)",
                                        [[list(s.status_row()) for s in rows]])
    generic.serial = 77
    assert bus.sent[0] == bytes(generic._marshall(False))


def test_the_body_is_marshalled_once_per_published_list() -> None:
    published = [[status("0000:06:00.0")]]
    bus = _Bus()
    reply = StatusReply(bus, lambda: published[0])  # type: ignore[arg-type]
    for _ in range(3):
        reply.handle(call())
    assert reply.builds == 1
    published[0] = [status("0000:06:00.0", State.VFIO, "vfio-pci")]  # a sync published
    reply.handle(call())
    assert reply.builds == 2
    assert list(received(bus.sent[-1]).body[0][0][3:5]) == ["vfio-pci", "vfio"]
    assert list(received(bus.sent[0]).body[0][0][3:5]) == ["nvidia", "host"]


def test_an_equal_but_new_list_is_marshalled_again() -> None:
    # The view makes a new list whenever a sync ran: identity, not equality, is the key,
    # so a list changed in place could never be served stale either.
    published = [[status("0000:06:00.0")]]
    reply = StatusReply(_Bus(), lambda: published[0])  # type: ignore[arg-type]
    reply.handle(call())
    published[0] = list(published[0])
    reply.handle(call())
    assert reply.builds == 2


def test_calls_it_does_not_answer_are_left_to_dbus_fast() -> None:
    bus = _Bus()
    reply = StatusReply(bus, lambda: [status("0000:06:00.0")])  # type: ignore[arg-type]
    assert reply.handle(call(signature="s", body=["x"])) is None
    assert reply.handle(call(path="/org/vfiod1/device/pci_0000_06_00_0")) is None
    assert reply.handle(call(member="Bind")) is None
    assert bus.sent == []


def test_a_call_that_wants_no_reply_gets_none() -> None:
    bus = _Bus()
    reply = StatusReply(bus, lambda: [status("0000:06:00.0")])  # type: ignore[arg-type]
    assert reply.handle(call(flags=MessageFlag.NO_REPLY_EXPECTED)) is True
    assert bus.sent == [] and reply.builds == 0
