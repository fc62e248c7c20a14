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
