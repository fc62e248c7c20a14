"""A bind reads what it needs once: one /proc scan, one child index before and after."""

from __future__ import annotations

from collections import Counter

import pytest

from vfiod import discovery
from vfiod.engine import Engine
from vfiod.sim import SimHost

GPU = "0000:06:00.0"


def _count_proc_scans(host: SimHost, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    calls: Counter[str] = Counter()
    holders, pids = host.holders, host.pids
    monkeypatch.setattr(host, "holders", lambda paths: calls.update(["holders"])
                        or holders(paths))
    monkeypatch.setattr(host, "pids", lambda: calls.update(["pids"]) or pids())
    return calls


def test_a_bind_scans_proc_once(engine: Engine, host: SimHost,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    engine.devices()  # the first scan is not part of the bind
    calls = _count_proc_scans(host, monkeypatch)
    assert engine.bind(GPU) == [GPU, "0000:06:00.1"]
    assert calls == Counter(holders=1, pids=1)


def test_a_bind_still_sees_the_guards_holders(engine: Engine, host: SimHost,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The one scan is the guards' scan: the desktop GPU's Xorg is still found."""
    engine.devices()
    calls = _count_proc_scans(host, monkeypatch)
    with pytest.raises(Exception, match="held open by Xorg"):
        engine.bind("0000:05:00.0")
    assert calls == Counter(holders=1, pids=1)


def _count_index_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time the /sys/class child index is built."""
    built: list[int] = []
    index = discovery.index_children
    monkeypatch.setattr(discovery, "index_children",
                        lambda host: built.append(1) or index(host))
    return built


def test_rereading_several_functions_indexes_their_children_once(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.devices()
    built = _count_index_builds(monkeypatch)
    engine.reread([GPU, "0000:06:00.1", "0000:09:00.0"])
    assert len(built) == 1


def test_a_bind_indexes_children_once_before_and_once_after(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.devices()
    built = _count_index_builds(monkeypatch)
    engine.bind(GPU)
    assert len(built) == 2


def test_the_status_after_a_bind_shows_the_group_on_vfio(engine: Engine) -> None:
    engine.devices()
    engine.bind(GPU)
    rows = {s.address: s for s in engine.status([GPU, "0000:06:00.1"])}
    assert [rows[a].state.value for a in sorted(rows)] == ["vfio", "vfio"]
