"""Fixtures shared by every test suite.

The daemon on a private bus, for the integration tests and the torture suite (defined
once here, so that a session starts one dbus-daemon):

- ``private_bus`` (session): one dbus-daemon with system-bus policy and the project's
  dbus/org.vfiod1.conf.
- ``vfiod``: a running daemon on a fresh simulated seed-x99 machine (its own sim root
  and state dir under tmp_path), stopped afterwards; ``make_vfiod`` builds one with
  another profile, config or environment, to be started by the test.

Every process started here is stopped by its pid, also when a test fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.helpers import Vfiod, wait_for
from vfiod.privatebus import PrivateBus, name_has_owner
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


@pytest.fixture(scope="session")
def private_bus() -> Iterator[PrivateBus]:
    """A dbus-daemon with system-bus policy for the whole test session."""
    for tool in ("dbus-daemon", "busctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run `make setup`")
    with PrivateBus() as bus:
        yield bus


@pytest.fixture
def make_vfiod(private_bus: PrivateBus, tmp_path: Path) -> Iterator[Callable[..., Vfiod]]:
    """A factory of (not yet started) daemons on fresh simulated machines; all stopped after."""
    made: list[Vfiod] = []

    def make(profile: str = "seed-x99", config: str | None = None,
             **env: str) -> Vfiod:
        n = len(made)
        # Always a config of the test's own: never this machine's /etc/vfiod.
        config_path = tmp_path / f"vfiod-{n}.toml"
        config_path.write_text(config or "")
        daemon = Vfiod(private_bus, tmp_path / f"sim-{n}", tmp_path / f"state-{n}",
                       tmp_path / f"vfiod-{n}.log", profile, config_path, dict(env))
        made.append(daemon)
        return daemon

    try:
        yield make
    finally:
        for daemon in made:
            daemon.stop()
        # The daemon's last moments must not leave the name owned for the next test.
        wait_for(lambda: not name_has_owner(private_bus.address), 10, "org.vfiod1 released")


@pytest.fixture
def vfiod(make_vfiod: Callable[..., Vfiod]) -> Vfiod:
    """vfiod running on a fresh simulated seed-x99 workstation."""
    return make_vfiod().start()
