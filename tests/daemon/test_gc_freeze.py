"""Garbage collection around start-up: paused while it builds, then its survivors frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from vfiod.daemon.gc_freeze import building_long_lived_state, collect_frozen


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    """Every test leaves the collector on and nothing frozen, as it found it."""
    gc.enable()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def test_no_collection_runs_while_start_up_builds() -> None:
    with building_long_lived_state():
        assert not gc.isenabled()


def test_what_start_up_built_is_frozen_and_collection_resumes() -> None:
    with building_long_lived_state():
        kept = [[n] for n in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)
    built = {id(item) for item in kept}
    assert not any(id(o) in built for o in gc.get_objects())  # out of every generation


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_garbage_left_by_start_up_is_collected_not_frozen() -> None:
    with building_long_lived_state():
        dropped = weakref.ref(_Cycle())  # unreachable at once; only a collection frees it
        assert dropped() is not None
    assert dropped() is None


def test_a_failed_start_up_freezes_nothing_and_collection_resumes() -> None:
    with pytest.raises(RuntimeError), building_long_lived_state():
        raise RuntimeError("cannot connect")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_collection_stays_off_after_start_up_when_it_was_off() -> None:
    gc.disable()
    with building_long_lived_state():
        pass
    assert not gc.isenabled()


def test_a_frozen_cycle_dropped_later_is_freed_by_collect_frozen() -> None:
    with building_long_lived_state():
        kept = [_Cycle()]
    dropped = weakref.ref(kept.pop())
    gc.collect()
    assert dropped() is not None  # frozen: ordinary collections do not see it
    collect_frozen()
    assert dropped() is None
    assert gc.get_freeze_count() > 0  # the survivors are frozen again


def test_collect_frozen_does_nothing_when_nothing_is_frozen() -> None:
    collect_frozen()
    assert gc.get_freeze_count() == 0
