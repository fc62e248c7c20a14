"""A process named with terminal escapes holds a render node of the simulated host: no
control character reaches vfioctl's output, the D-Bus properties or the daemon's log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vfiod.sim.holder import Holder, spawn_holder

from .helpers import Vfiod, wait_for
from .vfioctl_helpers import error_line, vfioctl

GPU = "0000:06:00.0"  # IOMMU group 31 in seed-x99
HOSTILE = "\x1b]0;pwned\x07"
SHOWN = "\\x1b]0;pwned\\x07"


@pytest.fixture
def hostile_holder(vfiod: Vfiod) -> Iterator[Holder]:
    """The hostile process as the GPU's guest (it holds /dev/vfio/31), once the daemon
    shows it. (A render node opened on the host is no event the daemon follows; the
    engine's tests hold one.)"""
    assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
    with spawn_holder(vfiod.sim_root, ["/dev/vfio/31"], comm=HOSTILE) as holder:
        wait_for(lambda: SHOWN in vfiod.get_property(GPU, "Holder"), what="the holder shown")
        yield holder


def _no_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, repr(text)


def test_status_shows_the_hostile_name_escaped(vfiod: Vfiod, hostile_holder: Holder) -> None:
    for args in (["status"], ["status", "--full"], ["status", GPU], ["status", "--json"]):
        result = vfioctl(vfiod.address, *args)
        assert result.returncode == 0, result.stderr
        _no_controls(result.stdout + result.stderr)
        assert SHOWN in result.stdout or SHOWN.replace("\\", "\\\\") in result.stdout, args


def test_unbind_refusal_shows_the_hostile_name_escaped(vfiod: Vfiod,
                                                       hostile_holder: Holder) -> None:
    result = vfioctl(vfiod.address, "unbind", GPU)
    assert result.returncode == 4, result.stderr
    line = error_line(result)
    _no_controls(line)
    assert SHOWN in line


def test_the_holder_property_and_status_row_are_escaped(vfiod: Vfiod,
                                                        hostile_holder: Holder) -> None:
    holder = vfiod.get_property(GPU, "Holder")
    assert holder.startswith(f"{SHOWN} (pid ")
    assert vfiod.status()[GPU]["holder"] == holder


def test_the_log_shows_the_hostile_name_escaped(vfiod: Vfiod, hostile_holder: Holder) -> None:
    vfiod.call("Unbind", "sa{sv}", GPU, "0")  # refused: the log names the holder
    wait_for(lambda: SHOWN in vfiod.log(), what="the refusal logged")
    _no_controls(vfiod.log())
