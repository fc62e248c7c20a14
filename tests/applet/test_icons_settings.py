"""The icon's pixmaps and the applet's config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfiod.applet.icons import COLOURS, ICON_NAMES, disc_pixmap, icon_pixmaps
from vfiod.applet.model import Look
from vfiod.applet.settings import SettingsError, load_settings, parse_settings


def test_each_look_has_its_own_icon_name_and_colour() -> None:
    assert len(set(ICON_NAMES.values())) == len(Look)
    assert len(set(COLOURS.values())) == len(Look)


def test_pixmap_is_argb_of_the_size_with_the_looks_colour_in_the_middle() -> None:
    size = 22
    data = disc_pixmap(size, COLOURS[Look.ERROR])
    assert len(data) == size * size * 4
    middle = ((size // 2) * size + size // 2) * 4
    assert data[middle:middle + 4] == bytes((0xff, *COLOURS[Look.ERROR]))
    assert data[0:4] == b"\x00\x00\x00\x00"  # the corner is transparent


def test_pixmaps_come_in_several_sizes() -> None:
    assert [(w, h) for w, h, _ in icon_pixmaps(Look.HOST)] == [(16, 16), (22, 22),
                                                               (32, 32), (48, 48)]


def test_no_config_file_means_every_notification_is_on(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "missing.toml")
    assert all(settings.notifies(k) for k in settings.notifications)


def test_a_kind_can_be_turned_off() -> None:
    settings = parse_settings("[notifications]\nguest_took = false\n")
    assert not settings.notifies("guest_took")
    assert settings.notifies("device_back")


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="notifications.guest_left: unknown kind"):
        parse_settings("[notifications]\nguest_left = false\n")


def test_a_non_boolean_is_refused() -> None:
    with pytest.raises(SettingsError, match="must be true or false"):
        parse_settings('[notifications]\ndevice_error = "no"\n')


def test_broken_toml_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "applet.toml"
    path.write_text("[notifications\n")
    with pytest.raises(SettingsError, match=str(path)):
        load_settings(path)
