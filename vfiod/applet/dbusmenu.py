"""The applet's menu over com.canonical.dbusmenu (what tray hosts call to show it).

The menu is rebuilt from the model on every change; ids stay stable (one per entry
key), so a host that has the menu open keeps pointing at the right items. A change of
structure bumps the revision and sends LayoutUpdated; a change of labels or
enabled-ness alone sends ItemsPropertiesUpdated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from dbus_fast import Variant
from dbus_fast.annotations import DBusSignature
from dbus_fast.constants import PropertyAccess
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from vfiod.applet.model import MenuEntry

INTERFACE = "com.canonical.dbusmenu"
PATH = "/MenuBar"
ROOT = 0

Props = dict[str, Variant]
#: id -> (properties, child ids)
Flat = dict[int, tuple[Props, list[int]]]


def entry_properties(entry: MenuEntry) -> Props:
    """The dbusmenu properties of one entry ("_" doubled: dbusmenu reads one as an
    access-key marker)."""
    if entry.separator:
        return {"type": Variant("s", "separator")}
    props: Props = {"label": Variant("s", entry.label.replace("_", "__")),
                    "enabled": Variant("b", entry.enabled),
                    "visible": Variant("b", True)}
    if entry.children:
        props["children-display"] = Variant("s", "submenu")
    return props


class DBusMenu(ServiceInterface):
    """com.canonical.dbusmenu over a tree of MenuEntry."""

    def __init__(self, on_click: Callable[[tuple[str, str]], None]) -> None:
        super().__init__(INTERFACE)
        self.revision = 1
        self._on_click = on_click
        self._ids: dict[str, int] = {}
        self._actions: dict[int, tuple[str, str]] = {}
        self._flat: Flat = {ROOT: ({"children-display": Variant("s", "submenu")}, [])}

    # -- what the applet calls ---------------------------------------------------------
    def set_menu(self, entries: Sequence[MenuEntry]) -> None:
        """Show *entries*; signal hosts with what changed (nothing when nothing did)."""
        flat: Flat = {ROOT: ({"children-display": Variant("s", "submenu")}, [])}
        actions: dict[int, tuple[str, str]] = {}

        def add(entry: MenuEntry, parent: int) -> None:
            item = self._ids.setdefault(entry.key, len(self._ids) + 1)
            flat[item] = (entry_properties(entry), [])
            flat[parent][1].append(item)
            if entry.action is not None and entry.enabled:
                actions[item] = entry.action
            for child in entry.children:
                add(child, item)

        for entry in entries:
            add(entry, ROOT)
        old, self._flat, self._actions = self._flat, flat, actions
        if {i: c for i, (_, c) in old.items()} != {i: c for i, (_, c) in flat.items()}:
            self.revision += 1
            self.LayoutUpdated(self.revision, ROOT)  # type: ignore[call-arg]
            return
        changed = [[item, props] for item, (props, _) in flat.items()
                   if _values(props) != _values(old[item][0])]
        if changed:
            self.ItemsPropertiesUpdated(changed, [])  # type: ignore[call-arg]

    def layout(self, parent: int = ROOT, depth: int = -1) -> list[Any]:
        """The ``(ia{sv}av)`` layout below *parent*, *depth* levels deep (-1: all)."""
        props, children = self._flat[parent]
        below = ([] if depth == 0 else
                 [Variant("(ia{sv}av)", self.layout(child, depth - 1)) for child in children])
        return [parent, props, below]

    def item_id(self, key: str) -> int:
        """The dbusmenu id of the entry with *key* (KeyError if never shown)."""
        return self._ids[key]

    # -- com.canonical.dbusmenu --------------------------------------------------------
    @dbus_method(name="GetLayout")
    def get_layout(self, parent_id: Annotated[int, DBusSignature("i")],
                   recursion_depth: Annotated[int, DBusSignature("i")],
                   property_names: Annotated[list[str], DBusSignature("as")]
                   ) -> Annotated[list[Any], DBusSignature("u(ia{sv}av)")]:
        self._known(parent_id)
        return [self.revision, self.layout(parent_id, recursion_depth)]

    @dbus_method(name="GetGroupProperties")
    def get_group_properties(self, ids: Annotated[list[int], DBusSignature("ai")],
                             property_names: Annotated[list[str], DBusSignature("as")]
                             ) -> Annotated[list[Any], DBusSignature("a(ia{sv})")]:
        wanted = set(property_names)
        return [[item, {k: v for k, v in self._flat[item][0].items()
                        if not wanted or k in wanted}]
                for item in (ids or list(self._flat)) if item in self._flat]

    @dbus_method(name="GetProperty")
    def get_property(self, item: Annotated[int, DBusSignature("i")],
                     name: Annotated[str, DBusSignature("s")]
                     ) -> Annotated[Variant, DBusSignature("v")]:
        self._known(item)
        try:
            return self._flat[item][0][name]
        except KeyError:
            raise DBusError("org.freedesktop.DBus.Error.InvalidArgs",
                            f"item {item} has no property {name}") from None

    @dbus_method(name="Event")
    def event(self, item: Annotated[int, DBusSignature("i")],
              event_id: Annotated[str, DBusSignature("s")],
              data: Annotated[Variant, DBusSignature("v")],
              timestamp: Annotated[int, DBusSignature("u")]
              ) -> Annotated[None, DBusSignature("")]:
        self._known(item)
        self._event(item, event_id)

    @dbus_method(name="EventGroup")
    def event_group(self, events: Annotated[list[Any], DBusSignature("a(isvu)")]
                    ) -> Annotated[list[int], DBusSignature("ai")]:
        errors = [item for item, _, _, _ in events if item not in self._flat]
        for item, event_id, _, _ in events:
            if item in self._flat:
                self._event(item, event_id)
        return errors

    @dbus_method(name="AboutToShow")
    def about_to_show(self, item: Annotated[int, DBusSignature("i")]
                      ) -> Annotated[bool, DBusSignature("b")]:
        # The menu is always current (it follows vfiod's signals): nothing to update.
        self._known(item)
        return False

    @dbus_method(name="AboutToShowGroup")
    def about_to_show_group(self, ids: Annotated[list[int], DBusSignature("ai")]
                            ) -> Annotated[list[Any], DBusSignature("aiai")]:
        return [[], [item for item in ids if item not in self._flat]]

    @dbus_signal(name="ItemsPropertiesUpdated")
    def ItemsPropertiesUpdated(self, updated: list[Any], removed: list[Any]
                               ) -> Annotated[list[Any], DBusSignature("a(ia{sv})a(ias)")]:
        return [updated, removed]

    @dbus_signal(name="LayoutUpdated")
    def LayoutUpdated(self, revision: int, parent: int
                      ) -> Annotated[list[Any], DBusSignature("ui")]:
        return [revision, parent]

    @dbus_signal(name="ItemActivationRequested")
    def ItemActivationRequested(self, item: int, timestamp: int
                                ) -> Annotated[list[Any], DBusSignature("iu")]:
        return [item, timestamp]

    @dbus_property(name="Version", access=PropertyAccess.READ)
    def version(self) -> Annotated[int, DBusSignature("u")]:
        return 3

    @dbus_property(name="TextDirection", access=PropertyAccess.READ)
    def text_direction(self) -> Annotated[str, DBusSignature("s")]:
        return "ltr"

    @dbus_property(name="Status", access=PropertyAccess.READ)
    def status(self) -> Annotated[str, DBusSignature("s")]:
        return "normal"

    @dbus_property(name="IconThemePath", access=PropertyAccess.READ)
    def icon_theme_path(self) -> Annotated[list[str], DBusSignature("as")]:
        return []

    # -- helpers -----------------------------------------------------------------------
    def _known(self, item: int) -> None:
        if item not in self._flat:
            raise DBusError("org.freedesktop.DBus.Error.InvalidArgs", f"no menu item {item}")

    def _event(self, item: int, event_id: str) -> None:
        action = self._actions.get(item)
        if event_id == "clicked" and action is not None:
            self._on_click(action)


def _values(props: Props) -> dict[str, Any]:
    return {k: (v.signature, v.value) for k, v in props.items()}
