"""The applet on a real desktop: xfce4-panel's system tray and dunst under Xvfb, against
vfiod on the simulated seed-x99. The menu is opened and its Bind entry clicked with the
mouse (xdotool) where the screen shows them; the menu on screen is checked, row by row,
against dbusmenu's GetLayout. Screenshots of the icon's three looks, the open menu
and a notification are kept in build/artefacts/desktop/ (VFIOD_ARTEFACTS overrides)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from vfiod.sim.holder import spawn_holder

from .applet_helpers import applet, labels
from .desktop import Desktop, MenuRow, desktop, missing_tools
from .helpers import Vfiod, sim_driver, wait_for

GPU = "0000:06:00.0"
PANEL_ROWS = range(0, 33)
REPO = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("VFIOD_ARTEFACTS", REPO / "build" / "artefacts")) / "desktop"
CONFIG = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\n'


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desktop]:
    """Xvfb with xfce4-panel's tray and dunst on a private session bus."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make setup`")
    with desktop(tmp_path / "desktop", ARTEFACTS) as running:
        yield running


def item_name(desk: Desktop) -> str:
    names = [n for n in desk.bus_names() if n.startswith("org.kde.StatusNotifierItem-")]
    return names[0] if names else ""


async def dbus_get(desk: Desktop, member: str, signature: str, body: list[object],
                   path: str, interface: str) -> list[object]:
    bus = await MessageBus(bus_address=desk.session_address).connect()
    try:
        reply = await bus.call(Message(destination=item_name(desk), path=path,
                                       interface=interface, member=member,
                                       signature=signature, body=body))
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        return reply.body
    finally:
        bus.disconnect()


def menu_labels(desk: Desktop) -> list[str]:
    """The applet's menu as a tray host reads it (dbusmenu GetLayout)."""
    _rev, root = asyncio.run(dbus_get(desk, "GetLayout", "iias", [0, -1, []], "/MenuBar",
                                      "com.canonical.dbusmenu"))
    return labels(root)  # type: ignore[arg-type]


def icon_name(desk: Desktop) -> str:
    (value,) = asyncio.run(dbus_get(desk, "Get", "ss",
                                    ["org.kde.StatusNotifierItem", "IconName"],
                                    "/StatusNotifierItem", "org.freedesktop.DBus.Properties"))
    return value.value  # type: ignore[attr-defined]


def gpu_submenu_enabled(desk: Desktop) -> list[bool]:
    """The enabled flags of the gpu submenu's items (separators left out), per GetLayout."""
    _rev, root = asyncio.run(dbus_get(desk, "GetLayout", "iias", [0, -1, []], "/MenuBar",
                                      "com.canonical.dbusmenu"))
    [gpu] = [child.value for child in root[2]]  # type: ignore[index]
    return [item.value[1]["enabled"].value for item in gpu[2]
            if "label" in item.value[1]]


def pad(box: tuple[int, int, int, int], by: int = 3) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    return max(0, left - by), max(0, top - by), right + by, min(PANEL_ROWS[-1], bottom + by)


def test_applet_in_xfce4_panel_tray_with_dunst(
        desk: Desktop, make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    (tmp_path / "applet.toml").write_text("")
    bare = desk.settled()  # the panel fully drawn, without the applet
    with applet(daemon.address, desk.session_address, tmp_path / "applet.toml") as proc:
        # The tray host draws the item: find it by what changed in the panel.
        box = wait_for(lambda: desk.screen().changed_box(bare, PANEL_ROWS), 20,
                       "the applet's icon in the panel")
        wait_for(lambda: any(label.startswith("gpu (06:00.0)") for label in menu_labels(desk)),
                 10, "the menu")
        assert box[2] - box[0] < 64, f"not one icon's change: {box}"
        icon = pad(box)
        centre = ((icon[0] + icon[2]) // 2, (icon[1] + icon[3]) // 2)
        looks: dict[str, bytes] = {}
        looks["host"] = desk.screen().crop(icon)
        desk.screenshot("icon-host", icon)
        desk.screenshot("panel-host")
        assert icon_name(desk) == "computer"
        assert "gpu (06:00.0): on the host (nvidia)" in menu_labels(desk)

        # Open the menu with the mouse, as a user does; then its device submenu.
        before = desk.screen()
        desk.run("xdotool", "mousemove", str(centre[0]), str(centre[1]), "click", "1")
        wait_for(lambda: desk.screen().changed_box(before, range(33, 480)), 10,
                 "the menu to open")
        opened = desk.settled()
        desk.screenshot("menu-open")
        menu_box = opened.changed_box(before, range(33, 480))
        assert menu_box is not None
        # The menu on screen has the rows GetLayout has: one per shown device.
        assert len(opened.text_rows(menu_box)) == 1
        desk.run("xdotool", "key", "Down", "Right")
        wait_for(lambda: desk.screen().changed_box(opened, range(33, 480),
                                                   range(menu_box[2] + 1, 800)), 10,
                 "the device submenu to open")
        submenu = desk.settled()
        desk.screenshot("menu-device-submenu")
        sub_box = submenu.changed_box(opened, range(33, 480), range(menu_box[2] + 1, 800))
        assert sub_box is not None
        # The submenu on screen, row by row, is GetLayout's: State, Holder, Health
        # (disabled), Bind (enabled, selected by the keyboard), Unbind (disabled), Reset.
        assert gpu_submenu_enabled(desk) == [False, False, False, True, False, True]
        assert submenu.text_rows(sub_box) == [
            MenuRow(highlighted=(i == 3), enabled=enabled)
            for i, enabled in enumerate(gpu_submenu_enabled(desk))]
        # Click "Bind to vfio-pci" with the mouse, where the screen shows it.
        bind_row = submenu.text_rows(sub_box)[3]
        desk.run("xdotool", "mousemove", str((sub_box[0] + sub_box[2]) // 2),
                 str(bind_row.middle), "click", "1")
        wait_for(lambda: sim_driver(daemon.sim_root, GPU) == "vfio-pci", 20,
                 "the GPU bound to vfio-pci")
        wait_for(lambda: icon_name(desk) == "video-display", 10, "the 'guests' icon")
        wait_for(lambda: desk.screen().crop(icon) != looks["host"], 10,
                 "the tray to redraw the icon")
        looks["guests"] = desk.screen().crop(icon)
        desk.screenshot("icon-guests", icon)
        assert "gpu (06:00.0): on vfio-pci, free" in menu_labels(desk)

        # A guest takes the GPU and exits: dunst shows "came back".
        with spawn_holder(daemon.sim_root, ["/dev/vfio/31"]):
            wait_for(lambda: "gpu (06:00.0): in a guest" in menu_labels(desk), 10,
                     "the menu to show the guest")
        wait_for(lambda: "gpu (06:00.0): on vfio-pci, free" in menu_labels(desk), 10,
                 "the guest to let go")
        desk.run("dunstctl", "count", "displayed")
        desk.screenshot("notification-guest-exited")
        desk.run("dunstctl", "close-all")
        wait_for(lambda: "gpu (0000:06:00.0) came back" in desk.notifications(), 10,
                 "dunst to have shown the notification")
        assert "Bind 0000:06:00.0: done" in desk.notifications()

        # vfiod stops: the error look and "vfiod not running"; then it recovers.
        daemon.stop()
        wait_for(lambda: menu_labels(desk) == ["vfiod not running"], 10, "not running")
        wait_for(lambda: desk.screen().crop(icon) not in (looks["host"], looks["guests"]),
                 10, "the error icon")
        looks["error"] = desk.screen().crop(icon)
        desk.screenshot("icon-error", icon)
        assert icon_name(desk) == "dialog-error"
        daemon.start()
        wait_for(lambda: "gpu (06:00.0): on vfio-pci, free" in menu_labels(desk), 10,
                 "the menu back after vfiod's restart")
        assert proc.poll() is None
    assert len(set(looks.values())) == 3
