"""Fixtures shared by every test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vfiod.sim import SimHost


@pytest.fixture
def sim() -> Iterator[SimHost]:
    """A fresh simulated seed-x99 machine (its tree in tmpfs), closed after the test."""
    host = SimHost(profile="seed-x99")
    try:
        yield host
    finally:
        host.close()


@pytest.fixture(scope="module")
def seed() -> Iterator[SimHost]:
    """One seed-x99 machine shared by a module's tests that only read it."""
    host = SimHost(profile="seed-x99")
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def noiommu() -> Iterator[SimHost]:
    """The same workstation with the IOMMU off (no groups)."""
    host = SimHost(profile="seed-x99-noiommu")
    try:
        yield host
    finally:
        host.close()


#: The dying-cards machine's modelled kernel times, scaled: 60 s become 0.3 s.
DYING_TIME_SCALE = 0.005


@pytest.fixture
def dying() -> Iterator[SimHost]:
    """The dying-cards machine (cards that die like real ones), its modelled reset times
    scaled by DYING_TIME_SCALE."""
    sim = SimHost("dying-cards", time_scale=DYING_TIME_SCALE)
    try:
        yield sim
    finally:
        sim.close()
