"""Manager.Status answered from a body marshalled once per published status.

Status is the call clients make most (``vfioctl status``, applets, status bars polling),
and its answer changes only when the view publishes a new status list. dbus-fast's
generic path builds one row per function, then marshals them all, on every call: 12 ms
of a 17 ms round trip on 4,161 functions (issue 14's profile), and the whole cost of a
call when 50 clients poll at once. Here the body is marshalled once per list the view
publishes (``DeviceView.statuses`` makes a new list on every sync and returns the same
one until then), and each call only gets a header (vfiod.daemon.premarshalled).

Anything unusual (arguments, another path) is left to dbus-fast's handler, which
answers it as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dbus_fast import Message, MessageType
from dbus_fast.constants import MessageFlag
from dbus_fast.message_bus import BaseMessageBus

from vfiod.contract import MANAGER_INTERFACE, MANAGER_PATH
from vfiod.daemon.premarshalled import PremarshalledReply, marshalled
from vfiod.daemon.service import STATUS_SIGNATURE
from vfiod.records import DeviceStatus


def status_body(statuses: Sequence[DeviceStatus]) -> bytes:
    """Status's reply body for *statuses*, marshalled."""
    return marshalled(STATUS_SIGNATURE, [[list(s.status_row()) for s in statuses]])


class StatusReply:
    """Answers Manager.Status on *bus* from the body of the current status list."""

    def __init__(self, bus: BaseMessageBus,
                 statuses: Callable[[], list[DeviceStatus]]) -> None:
        self.bus = bus
        self.statuses = statuses
        self._for: list[DeviceStatus] | None = None  # kept: its id cannot be reused
        self._body = b""
        #: How many times a body was marshalled (tests check the caching with it).
        self.builds = 0

    def install(self) -> None:
        """Answer Status from now on (before dbus-fast's own dispatch)."""
        self.bus.add_message_handler(self.handle)

    def body(self) -> bytes:
        """The marshalled body for the current list."""
        current = self.statuses()
        if current is not self._for:
            self._body = status_body(current)
            self._for = current
            self.builds += 1
        return self._body

    def handle(self, msg: Message) -> bool | None:
        """Message handler: send Status's reply; None leaves the message to dbus-fast."""
        if (msg.member != "Status" or msg.interface != MANAGER_INTERFACE
                or msg.path != MANAGER_PATH or msg.signature
                or msg.message_type is not MessageType.METHOD_CALL):
            return None
        if msg.flags.value & MessageFlag.NO_REPLY_EXPECTED.value:
            return True  # nothing to send
        self.bus.send(PremarshalledReply.to(msg, STATUS_SIGNATURE, self.body()))
        return True
