"""org.kde.StatusNotifierItem: the tray icon, its tooltip, and its menu's path.

Tray hosts read the properties and follow the New* signals; left and right clicks
both open the menu (ItemIsMenu), which lives at dbusmenu.PATH on the same connection.
"""

from __future__ import annotations

from typing import Annotated, Any

from dbus_fast.annotations import DBusSignature
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from vfiod.applet import dbusmenu
from vfiod.applet.icons import ICON_NAMES, icon_pixmaps
from vfiod.applet.model import Look

INTERFACE = "org.kde.StatusNotifierItem"
PATH = "/StatusNotifierItem"
WATCHER_NAME = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
ITEM_ID = "vfiod-applet"

Str = Annotated[str, DBusSignature("s")]
Int = Annotated[int, DBusSignature("i")]
NoValue = Annotated[None, DBusSignature("")]


class StatusNotifierItem(ServiceInterface):
    """The tray icon in one of the three looks, with a tooltip."""

    def __init__(self) -> None:
        super().__init__(INTERFACE)
        self.look = Look.HOST
        self.tooltip_title = "vfiod"
        self.tooltip_body = ""
        self.status_value = "Active"

    def show(self, look: Look, tooltip: tuple[str, str]) -> None:
        """Change the look and tooltip; signal only what changed."""
        if look != self.look:
            self.look = look
            # NeedsAttention makes hosts that hide passive items show the error.
            status = "NeedsAttention" if look is Look.ERROR else "Active"
            self.NewIcon()  # type: ignore[call-arg]
            self.emit_properties_changed({"IconName": ICON_NAMES[look]})
            if status != self.status_value:
                self.status_value = status
                self.NewStatus(status)  # type: ignore[call-arg]
        if tooltip != (self.tooltip_title, self.tooltip_body):
            self.tooltip_title, self.tooltip_body = tooltip
            self.NewToolTip()  # type: ignore[call-arg]

    @dbus_property(name="Category", access=PropertyAccess.READ)
    def category(self) -> Str:
        return "Hardware"

    @dbus_property(name="Id", access=PropertyAccess.READ)
    def item_id(self) -> Str:
        return ITEM_ID

    @dbus_property(name="Title", access=PropertyAccess.READ)
    def title(self) -> Str:
        return "vfiod"

    @dbus_property(name="Status", access=PropertyAccess.READ)
    def status(self) -> Str:
        return self.status_value

    @dbus_property(name="WindowId", access=PropertyAccess.READ)
    def window_id(self) -> Annotated[int, DBusSignature("i")]:
        return 0

    @dbus_property(name="IconName", access=PropertyAccess.READ)
    def icon_name(self) -> Str:
        return ICON_NAMES[self.look]

    @dbus_property(name="IconPixmap", access=PropertyAccess.READ)
    def icon_pixmap(self) -> Annotated[list[Any], DBusSignature("a(iiay)")]:
        return [list(p) for p in icon_pixmaps(self.look)]

    @dbus_property(name="AttentionIconName", access=PropertyAccess.READ)
    def attention_icon_name(self) -> Str:
        return ICON_NAMES[Look.ERROR]

    @dbus_property(name="OverlayIconName", access=PropertyAccess.READ)
    def overlay_icon_name(self) -> Str:
        return ""

    @dbus_property(name="IconThemePath", access=PropertyAccess.READ)
    def icon_theme_path(self) -> Str:
        return ""

    @dbus_property(name="ToolTip", access=PropertyAccess.READ)
    def tool_tip(self) -> Annotated[list[Any], DBusSignature("(sa(iiay)ss)")]:
        return [ICON_NAMES[self.look], [], self.tooltip_title, self.tooltip_body]

    @dbus_property(name="ItemIsMenu", access=PropertyAccess.READ)
    def item_is_menu(self) -> Annotated[bool, DBusSignature("b")]:
        return True

    @dbus_property(name="Menu", access=PropertyAccess.READ)
    def menu(self) -> Annotated[str, DBusSignature("o")]:
        return dbusmenu.PATH

    @dbus_method(name="ContextMenu")
    def context_menu(self, x: Int, y: Int) -> NoValue:
        pass  # ItemIsMenu: the host shows the dbusmenu itself

    @dbus_method(name="Activate")
    def activate(self, x: Int, y: Int) -> NoValue:
        pass

    @dbus_method(name="SecondaryActivate")
    def secondary_activate(self, x: Int, y: Int) -> NoValue:
        pass

    @dbus_method(name="Scroll")
    def scroll(self, delta: Int, orientation: Str) -> NoValue:
        pass

    @dbus_signal(name="NewIcon")
    def NewIcon(self) -> NoValue:
        return None

    @dbus_signal(name="NewAttentionIcon")
    def NewAttentionIcon(self) -> NoValue:
        return None

    @dbus_signal(name="NewToolTip")
    def NewToolTip(self) -> NoValue:
        return None

    @dbus_signal(name="NewTitle")
    def NewTitle(self) -> NoValue:
        return None

    @dbus_signal(name="NewStatus")
    def NewStatus(self, status: str) -> Str:
        return status
