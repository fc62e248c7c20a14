"""The dbusmenu layer: layout shape, stable ids, and which signal a change sends."""

from __future__ import annotations

from typing import Any

from vfiod.applet.dbusmenu import DBusMenu
from vfiod.applet.model import MenuEntry


class RecordingMenu(DBusMenu):
    """DBusMenu with its two change signals recorded instead of sent."""

    def __init__(self) -> None:
        self.clicks: list[tuple[str, str]] = []
        self.signals: list[tuple[str, Any]] = []
        super().__init__(self.clicks.append)

    def LayoutUpdated(self, revision: int, parent: int) -> None:  # type: ignore[override]
        self.signals.append(("LayoutUpdated", (revision, parent)))

    def ItemsPropertiesUpdated(self, updated: list[Any], removed: list[Any]  # type: ignore[override]
                               ) -> None:
        self.signals.append(("ItemsPropertiesUpdated", updated))


def gpu_menu(label: str = "gpu (06:00.0): on the host", bind: bool = True) -> list[MenuEntry]:
    return [MenuEntry("0000:06:00.0", label, children=(
        MenuEntry("0000:06:00.0/sep", separator=True),
        MenuEntry("0000:06:00.0/Bind", "Bind_to vfio-pci", enabled=bind,
                  action=("Bind", "0000:06:00.0")),))]


def labels(layout: list[Any]) -> list[Any]:
    _id, props, children = layout
    own = props["label"].value if "label" in props else props.get("type").value \
        if "type" in props else "root"
    return [own, [labels(child.value) for child in children]]


def test_layout_nests_submenus_and_doubles_underscores() -> None:
    menu = RecordingMenu()
    menu.set_menu(gpu_menu())
    assert labels(menu.layout()) == ["root", [["gpu (06:00.0): on the host",
                                               [["separator", []],
                                                ["Bind__to vfio-pci", []]]]]]


def test_layout_depth_zero_has_no_children() -> None:
    menu = RecordingMenu()
    menu.set_menu(gpu_menu())
    assert menu.layout(0, 0)[2] == []


def test_a_new_structure_bumps_the_revision_and_sends_layout_updated() -> None:
    menu = RecordingMenu()
    before = menu.revision
    menu.set_menu(gpu_menu())
    assert menu.revision == before + 1
    assert menu.signals == [("LayoutUpdated", (before + 1, 0))]


def test_a_label_change_keeps_ids_and_sends_items_properties_updated() -> None:
    menu = RecordingMenu()
    menu.set_menu(gpu_menu())
    gpu_id, revision = menu.item_id("0000:06:00.0"), menu.revision
    menu.signals.clear()
    menu.set_menu(gpu_menu(label="gpu (06:00.0): on vfio-pci, free"))
    assert menu.item_id("0000:06:00.0") == gpu_id and menu.revision == revision
    [(name, updated)] = menu.signals
    assert name == "ItemsPropertiesUpdated"
    assert [item for item, _ in updated] == [gpu_id]


def test_the_same_menu_again_sends_nothing() -> None:
    menu = RecordingMenu()
    menu.set_menu(gpu_menu())
    menu.signals.clear()
    menu.set_menu(gpu_menu())
    assert menu.signals == []


def test_clicking_an_enabled_entry_runs_its_action() -> None:
    menu = RecordingMenu()
    menu.set_menu(gpu_menu())
    menu._event(menu.item_id("0000:06:00.0/Bind"), "clicked")
    assert menu.clicks == [("Bind", "0000:06:00.0")]


def test_clicking_a_disabled_entry_or_hovering_does_nothing() -> None:
    menu = RecordingMenu()
    menu.set_menu(gpu_menu(bind=False))
    menu._event(menu.item_id("0000:06:00.0/Bind"), "clicked")
    menu.set_menu(gpu_menu())
    menu._event(menu.item_id("0000:06:00.0/Bind"), "hovered")
    assert menu.clicks == []
