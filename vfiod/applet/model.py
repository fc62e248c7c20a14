"""The applet's menu and icon look: pure functions of the devices vfiod reports.

No D-Bus here: the dbusmenu and StatusNotifierItem modules render what these return,
and the unit tests check them directly.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from vfiod.ctl.devices import DeviceProperties

#: The operations the menu offers per device, as (Manager method, menu label).
OPERATIONS: tuple[tuple[str, str], ...] = (("Bind", "Bind to vfio-pci"),
                                           ("Unbind", "Return to the host"),
                                           ("Reset", "Reset"))
NOT_RUNNING = "vfiod not running"


class Look(Enum):
    """What the tray icon says at a glance."""

    HOST = "host"      # every shown device is on the host
    GUESTS = "guests"  # some are given to guests (on vfio-pci, in a guest or ready)
    ERROR = "error"    # one is in error, unhealthy or quarantined; or vfiod is gone


@dataclass(frozen=True)
class MenuEntry:
    """One menu item. ``key`` is stable across rebuilds (the dbusmenu id follows it)."""

    key: str
    label: str = ""
    enabled: bool = True
    #: (Manager method, device address) the item runs when clicked.
    action: tuple[str, str] | None = None
    children: tuple[MenuEntry, ...] = ()
    separator: bool = False


def config_name(dev: DeviceProperties) -> str:
    """The device's name in vfiod's config ("" when it has none)."""
    return str(dev.extra.get("ConfigName", "") or "")


def quarantined(dev: DeviceProperties) -> bool:
    """True when vfiod quarantined the device (its health record says so)."""
    return dev.quarantined


def releasing(dev: DeviceProperties) -> bool:
    """True while a forced Bind waits for the host's desktop to let go of the device
    (its Releasing property)."""
    return dev.releasing


def in_trouble(dev: DeviceProperties) -> bool:
    """In error, unhealthy or quarantined."""
    return dev.state == "error" or not dev.healthy or quarantined(dev)


def shown_devices(devices: Mapping[str, DeviceProperties]) -> list[DeviceProperties]:
    """The devices the applet shows: every configured one, every one in a guest, and
    every one in trouble, by address. (A host process holding a device, such as Xorg
    the desktop's GPU, does not make it a guest's.)"""
    return [dev for _, dev in sorted(devices.items())
            if config_name(dev) or dev.state == "guest" or in_trouble(dev)
            or releasing(dev)]


def choose_look(devices: Mapping[str, DeviceProperties], running: bool) -> Look:
    """The icon's look for what vfiod reports (ERROR when vfiod is not running)."""
    if not running:
        return Look.ERROR
    shown = shown_devices(devices)
    if any(in_trouble(dev) for dev in shown):
        return Look.ERROR
    if any(dev.state in ("vfio", "guest") for dev in shown):
        return Look.GUESTS
    return Look.HOST


def device_title(dev: DeviceProperties) -> str:
    """``gpu (06:00.0): in a guest`` — the config name, else the hardware name."""
    short = dev.address[5:] if dev.address.startswith("0000:") else dev.address
    name = config_name(dev) or dev.name or "PCI device"
    return f"{name} ({short}): {state_words(dev)}"


def state_words(dev: DeviceProperties) -> str:
    """The state in a few words a user reads."""
    if releasing(dev):
        return "being released by the desktop"
    if dev.state == "host":
        return f"on the host ({dev.driver})" if dev.driver else "on the host"
    return {"vfio": "on vfio-pci, free", "guest": "in a guest", "unbound": "no driver",
            "busy": "busy", "error": "error"}.get(dev.state, dev.state or "unknown")


def health_words(dev: DeviceProperties) -> str:
    """Healthy / unhealthy / quarantined, with what to do."""
    if quarantined(dev):
        return "Health: quarantined (reset it, or reboot the host if resets keep failing)"
    if not dev.healthy:
        return "Health: unhealthy (try Reset)"
    if dev.state == "error":
        return "Health: the last operation failed" + (f": {dev.error}" if dev.error else "")
    return "Health: healthy"


def allowed(operation: str, dev: DeviceProperties) -> bool:
    """Whether the menu offers *operation* for the device in its current state."""
    if dev.state in ("busy", "guest"):
        return False  # vfiod refuses both; a guest must let go first
    if operation == "Bind":
        return dev.state in ("host", "unbound", "error")
    if operation == "Unbind":
        return dev.state in ("vfio", "error")
    return True  # Reset: vfiod picks the method and says if none works


def device_entry(dev: DeviceProperties, pending: Collection[str] = ()) -> MenuEntry:
    """The submenu of one device: what it is, then Bind / Unbind / Reset."""
    running = dev.address in pending
    info = [MenuEntry(f"{dev.address}/state", f"State: {dev.state or 'unknown'}"
                      + (f" ({dev.driver})" if dev.driver else ""), enabled=False),
            MenuEntry(f"{dev.address}/holder", f"Holder: {dev.holder or 'none'}",
                      enabled=False),
            MenuEntry(f"{dev.address}/health", health_words(dev), enabled=False)]
    if releasing(dev):
        info.append(MenuEntry(f"{dev.address}/releasing",
                              "Releasing: waiting for the desktop to close the card…",
                              enabled=False))
    if running:
        info.append(MenuEntry(f"{dev.address}/pending", "An operation is running…",
                              enabled=False))
    actions = [MenuEntry(f"{dev.address}/{op}", label,
                         enabled=not running and allowed(op, dev), action=(op, dev.address))
               for op, label in OPERATIONS]
    return MenuEntry(dev.address, device_title(dev), children=(
        *info, MenuEntry(f"{dev.address}/sep", separator=True), *actions))


def build_menu(devices: Mapping[str, DeviceProperties], running: bool,
               pending: Collection[str] = ()) -> list[MenuEntry]:
    """The whole menu: one submenu per shown device, or why there is none."""
    if not running:
        return [MenuEntry("status", NOT_RUNNING, enabled=False)]
    shown = shown_devices(devices)
    if not shown:
        return [MenuEntry("status", "No configured devices and no guests", enabled=False)]
    return [device_entry(dev, pending) for dev in shown]


def tooltip(devices: Mapping[str, DeviceProperties], running: bool) -> tuple[str, str]:
    """(title, body) of the tray icon's tooltip."""
    if not running:
        return ("vfiod", NOT_RUNNING)
    shown = shown_devices(devices)
    look = choose_look(devices, running)
    title = {Look.HOST: "vfiod: all devices on the host",
             Look.GUESTS: "vfiod: devices given to guests",
             Look.ERROR: "vfiod: a device needs attention"}[look]
    return (title, "\n".join(device_title(dev) for dev in shown))
