"""Desktop notifications through org.freedesktop.Notifications, one kind at a time.

Each kind can be turned off in the applet's config (vfiod.applet.settings). Sending
never blocks the applet: a missing notification daemon is logged once and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from vfiod.applet.follower import Transition
from vfiod.applet.model import config_name, quarantined
from vfiod.applet.settings import AppletSettings
from vfiod.ctl.devices import DeviceProperties

log = logging.getLogger(__name__)

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
APP_NAME = "vfiod"


@dataclass(frozen=True)
class Notice:
    """One notification: summary, body, icon name, urgency (0 low, 1 normal, 2 critical)."""

    kind: str
    summary: str
    body: str
    icon: str = "video-display"
    urgency: int = 1


def device_name(dev: DeviceProperties) -> str:
    """The config name and address, or the hardware name and address."""
    return f"{config_name(dev) or dev.name or 'PCI device'} ({dev.address})"


def notice_for(transition: Transition) -> Notice:
    """The notification for a change vfiod reported."""
    dev = transition.device
    name = device_name(dev)
    if transition.kind == "guest_took":
        return Notice("guest_took", f"{name} is in a guest",
                      f"Held by {transition.detail or 'a guest'}.")
    if transition.kind == "releasing":
        programs = ", ".join(transition.holders) or "programs of this desktop"
        seconds = f"{transition.timeout_ms / 1000:g}"
        return Notice("releasing", f"{name} is being handed to vfio-pci",
                      f"vfiod asked the desktop to release the card. Held by {programs}: "
                      f"they have {seconds} s to close it, or the bind is refused.",
                      icon="dialog-warning", urgency=2)
    if transition.kind == "device_back":
        where = f"on {dev.driver}" if dev.driver else dev.state
        return Notice("device_back", f"{name} came back",
                      f"Its guest let go; it is now {where}.", icon="computer")
    if quarantined(dev):
        what = ("vfiod quarantined it after failed resets. Try Reset from the vfiod "
                "menu; if it keeps failing, power the host off and on.")
    elif not dev.healthy:
        what = "It does not answer after a reset. Try Reset again, or reboot the host."
    else:
        what = (f"{transition.detail}. " if transition.detail else "") + \
            "Run `vfioctl status` for details, then Reset or Unbind it."
    return Notice("device_error", f"{name} needs attention", what, icon="dialog-error",
                  urgency=2)


def operation_notice(operation: str, address: str, error: str | None) -> Notice:
    """The notification for an operation the user started from the applet."""
    verb = {"Bind": "Bind", "Unbind": "Unbind", "Reset": "Reset"}.get(operation, operation)
    if error is None:
        return Notice("operation_finished", f"{verb} {address}: done", "")
    return Notice("operation_finished", f"{verb} {address} failed", error,
                  icon="dialog-error", urgency=2)


class Notifier:
    """Sends Notices the settings allow over the session bus."""

    def __init__(self, bus: MessageBus, settings: AppletSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.sent: list[Notice] = []
        self._warned = False
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, notice: Notice) -> None:
        """Send *notice* in the background unless its kind is turned off."""
        if not self.settings.notifies(notice.kind):
            return
        self.sent.append(notice)
        task = asyncio.ensure_future(self._notify(notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self, notice: Notice) -> None:
        try:
            reply = await self.bus.call(Message(
                destination=NAME, path=PATH, interface=NAME, member="Notify",
                signature="susssasa{sv}i",
                body=[APP_NAME, 0, notice.icon, notice.summary, notice.body, [],
                      {"urgency": Variant("y", notice.urgency),
                       "category": Variant("s", "device")}, -1]))
        except Exception as exc:  # the session bus went away: the applet ends anyway
            log.warning("notification not sent: %s", exc)
            return
        if reply.message_type is MessageType.ERROR and not self._warned:
            self._warned = True
            log.warning("notifications are not shown: %s", reply.error_name)
