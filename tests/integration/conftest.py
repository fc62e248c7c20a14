"""Fixtures for the integration tests: a real dbus-daemon, a real vfiod, real clients.

- ``private_bus``, ``vfiod`` and ``make_vfiod`` are in tests/conftest.py (the torture
  suite uses them too, and one session has one dbus-daemon).
- ``polkit``: python-dbusmock's polkitd template on the private bus (denying by
  default), stopped afterwards.

Every process started here is stopped by its pid, also when a test fails.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import POLKIT_NAME, wait_for
from vfiod.privatebus import PrivateBus, name_has_owner


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder starts real processes: mark it ``integration``."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


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
