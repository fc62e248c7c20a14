"""Fixtures for the engine's tests: a fresh simulated seed-x99 host per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.sim import SimHost


def _simulated(profile: str) -> Iterator[SimHost]:
    sim = SimHost(profile=profile)  # in tmpfs: ten times faster to build than on disk
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture
def host() -> Iterator[SimHost]:
    """The workstation from the write-up, simulated in a temporary tree."""
    yield from _simulated("seed-x99")


@pytest.fixture
def engine(host: SimHost, tmp_path: Path) -> Engine:
    """An engine over the simulated host with its own state directory."""
    return Engine(host, tmp_path / "state", write_timeout=5.0)


@pytest.fixture
def shared_host() -> Iterator[SimHost]:
    """seed-x99-shared-bus: the workstation plus buses that several functions or groups
    share (a PCI bus behind a PCIe-to-PCI bridge, a dual-port NIC)."""
    yield from _simulated("seed-x99-shared-bus")


@pytest.fixture
def shared_engine(shared_host: SimHost, tmp_path: Path) -> Engine:
    """An engine over seed-x99-shared-bus with its own state directory."""
    return Engine(shared_host, tmp_path / "state", write_timeout=5.0)
