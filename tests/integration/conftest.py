"""Fixtures for the integration tests: a real dbus-daemon, a real vfiod, real clients.

- ``private_bus`` (session): one dbus-daemon with system-bus policy and the project's
  dbus/org.vfiod1.conf.
- ``vfiod``: a running daemon on a fresh simulated seed-x99 machine (its own sim root
  and state dir under tmp_path), stopped afterwards; ``make_vfiod`` builds one with
  another profile, config or environment, to be started by the test.
- ``polkit``: python-dbusmock's polkitd template on the private bus (denying by
  default), stopped afterwards.

Every process started here is stopped by its pid, also when a test fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import POLKIT_NAME, Vfiod, wait_for
from vfiod.privatebus import PrivateBus, name_has_owner


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder starts real processes: mark it ``integration``."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture
def polkit(private_bus: PrivateBus, tmp_path: Path) -> Iterator[str]:
    """python-dbusmock's polkitd on the private bus (denies everything until told)."""
    env = private_bus.env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbusmock", "--system", "--template", "polkitd"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "polkitd.log", "wb"))  # noqa: SIM115
    try:
        wait_for(lambda: name_has_owner(private_bus.address, POLKIT_NAME) or proc.poll() is not None, 20,
                 "the mock polkitd")
        assert proc.poll() is None, (tmp_path / "polkitd.log").read_text()
        yield POLKIT_NAME
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wait_for(lambda: not name_has_owner(private_bus.address, POLKIT_NAME), 10,
                 "the mock polkitd gone")
