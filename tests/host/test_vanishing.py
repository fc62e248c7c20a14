"""A device vanishing while it is read is gone, never an error.

A concurrent unbind removes /sys/class/drm/cardN (or a hot-unplug the whole function)
between any two syscalls of a read. The hook below removes a link at the exact moment
it is about to be read, so the race is hit every time, without timing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from vfiod.discovery import Scanner, index_children, read_device
from vfiod.host import paths
from vfiod.sim import SimHost

GPU = "0000:06:00.0"  # the guest's GTX 1080 Ti: /sys/class/drm/card1 hangs below it


@pytest.fixture
def host() -> Iterator[SimHost]:
    """seed-x99 without its desktop session (no holder process needed here)."""
    sim = SimHost(profile="seed-x99", desktop=False)
    try:
        yield sim
    finally:
        sim.close()


def vanish_when_read(monkeypatch: pytest.MonkeyPatch, real_path: str) -> list[str]:
    """Remove the link *real_path* just before its first readlink; returns what was removed."""
    removed: list[str] = []
    readlink = os.readlink

    def racing_readlink(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> str:
        if os.fspath(path) == real_path and not removed:
            os.unlink(real_path)
            removed.append(real_path)
        return readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", racing_readlink)
    return removed


def _drm_card_of_gpu(host: SimHost) -> str:
    cards = index_children(host).by_address[GPU]["drm"]
    return next(c for c in cards if c.startswith("card"))


def test_a_class_link_removed_while_resolved_resolves_to_none(
        host: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = paths.class_entry("drm", _drm_card_of_gpu(host))
    removed = vanish_when_read(monkeypatch, host.real_path(entry))
    assert host.resolve(entry) is None
    assert removed  # the race was hit, not skipped


def test_a_scan_while_a_drm_link_goes_away_leaves_that_child_out(
        host: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    card = _drm_card_of_gpu(host)
    removed = vanish_when_read(monkeypatch, host.real_path(paths.class_entry("drm", card)))
    devices = Scanner(host).scan()
    assert removed
    assert GPU in devices
    assert card not in devices[GPU].children.drm


def test_a_function_removed_while_it_is_read_is_gone(
        host: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    removed = vanish_when_read(monkeypatch, host.real_path(paths.device_dir(GPU)))
    scanner = Scanner(host)
    assert read_device(host, GPU, scanner.ids, index_children(host)) is None
    assert removed


def test_holders_of_a_link_removed_while_it_is_followed_are_none(
        host: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = paths.class_entry("drm", _drm_card_of_gpu(host))
    removed = vanish_when_read(monkeypatch, host.real_path(entry))
    assert host.holders([entry]) == {}
    assert removed
