"""A holder process whose name carries terminal escapes: everything the engine says about
it is printable (the D-Bus properties, Status and errors are built from these)."""

from __future__ import annotations

import pytest

from vfiod.discovery import index_children
from vfiod.engine import Engine
from vfiod.errors import InUse
from vfiod.sim import SimHost

GPU = "0000:06:00.0"
HOSTILE = "\x1b]0;pwned\x07"  # sets the terminal's title, then rings its bell
SHOWN = "\\x1b]0;pwned\\x07"


def _hold_render_node(host: SimHost) -> None:
    render = next(c for c in index_children(host).by_address[GPU]["drm"]
                  if c.startswith("renderD"))
    host.spawn_holder([f"/dev/dri/{render}"], comm=HOSTILE)


def test_a_hostile_holder_name_is_escaped_in_the_devices_status(
        host: SimHost, engine: Engine) -> None:
    _hold_render_node(host)
    (status,) = engine.status([GPU])
    assert status.holder.startswith(f"{SHOWN} (pid ")
    assert SHOWN in status.used_by
    assert "\x1b" not in status.holder + status.used_by
    assert "\x07" not in status.holder + status.used_by


def test_a_hostile_holder_name_is_escaped_in_the_refusal(
        host: SimHost, engine: Engine) -> None:
    _hold_render_node(host)
    with pytest.raises(InUse) as info:
        engine.bind(GPU)
    assert SHOWN in str(info.value)
    assert "\x1b" not in str(info.value)
