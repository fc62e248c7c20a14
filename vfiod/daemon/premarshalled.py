"""A method reply whose body was marshalled before: sent with a fresh header only.

Replies that are large and change rarely (Status, GetManagedObjects on thousands of
functions) are kept marshalled and reused until what they say changes; each call then
costs a header. A body starts 8-aligned in a message, so its bytes do not depend on the
header in front of it.
"""

from __future__ import annotations

from dbus_fast import Message, MessageType, Variant
from dbus_fast._private.constants import LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField
from dbus_fast._private.marshaller import Marshaller

_HEADER_SIGNATURE = "yyyyuua(yv)"
_REPLY_SERIAL = HeaderField.REPLY_SERIAL.value
_DESTINATION = HeaderField.DESTINATION.value
_SIGNATURE = HeaderField.SIGNATURE.value


def marshalled(signature: str, body: list[object]) -> bytes:
    """*body* marshalled as *signature* (little-endian, as dbus-fast sends)."""
    return bytes(Marshaller(signature, body).marshall())


class PremarshalledReply(Message):
    """A METHOD_RETURN whose body is already marshalled (dbus-fast marshals a message
    when it is queued for sending, through ``_marshall``)."""

    body_bytes: bytes = b""

    @classmethod
    def to(cls, call: Message, signature: str, body_bytes: bytes) -> PremarshalledReply:
        """The reply to *call* with *body_bytes* (marshalled as *signature*)."""
        reply = cls(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial,
                    destination=call.sender, signature=signature)
        reply.body_bytes = body_bytes
        return reply

    def _marshall(self, negotiate_unix_fd: bool) -> bytearray:
        # dbus-fast's order of the header fields, so the bytes are the ones it sends.
        fields = [(_REPLY_SERIAL, Variant("u", self.reply_serial))]
        if self.destination:
            fields.append((_DESTINATION, Variant("s", self.destination)))
        fields.append((_SIGNATURE, Variant("g", self.signature)))
        header = bytearray(Marshaller(_HEADER_SIGNATURE, [
            LITTLE_ENDIAN, MessageType.METHOD_RETURN.value, self.flags.value,
            PROTOCOL_VERSION, len(self.body_bytes), self.serial, fields]).marshall())
        header.extend(b"\0" * (-len(header) % 8))
        return header + self.body_bytes
