"""polkitd on demand: asked when the bus can start it, root-only when the bus has none.

Each test has a bus of its own whose service folder may hold an activatable polkitd
(python-dbusmock's, not running until the bus starts it for vfiod's first question).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vfiod.privatebus import PrivateBus, name_has_owner, name_owner_pid

from .helpers import POLKIT_NAME, Vfiod, sim_driver, wait_for
from .test_daemon_auth import GPU, bind_as_nobody

TEMPLATE = Path(__file__).with_name("polkitd_allowing.py")


@pytest.fixture
def services(tmp_path: Path) -> Path:
    """The bus's folder of activatable services (empty until a test adds one)."""
    folder = tmp_path / "services"
    folder.mkdir()
    return folder


@pytest.fixture
def bus(services: Path) -> Iterator[PrivateBus]:
    """A private system-like bus that activates what *services* holds."""
    with PrivateBus(servicedirs=[services]) as private:
        try:
            yield private
        finally:
            # The activated mock is the bus's child, not ours: end it by its pid.
            pid = name_owner_pid(private.address, POLKIT_NAME)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not name_has_owner(private.address, POLKIT_NAME), 10,
                         "the activated polkitd gone")


@pytest.fixture
def make_activatable_polkit(bus: PrivateBus, services: Path, tmp_path: Path
                            ) -> Callable[..., None]:
    """Install an activatable mock polkitd allowing *allowed*; the bus rereads its folder."""

    def install(*allowed: str) -> None:
        params = json.dumps({"allowed": list(allowed)})
        (services / f"{POLKIT_NAME}.service").write_text(
            "[D-BUS Service]\n"
            f"Name={POLKIT_NAME}\n"
            f"Exec=/usr/bin/env DBUS_SYSTEM_BUS_ADDRESS={bus.address} {sys.executable} "
            f"-m dbusmock --system --template {TEMPLATE} -p '{params}'\n")
        subprocess.run(["busctl", f"--address={bus.address}", "call", "org.freedesktop.DBus",
                        "/org/freedesktop/DBus", "org.freedesktop.DBus", "ReloadConfig"],
                       check=True, capture_output=True, timeout=10)

    return install


@pytest.fixture
def daemon(bus: PrivateBus, tmp_path: Path) -> Iterator[Vfiod]:
    """vfiod on the test's bus, over a fresh simulated seed-x99 machine."""
    config = tmp_path / "vfiod.toml"
    config.write_text("")
    running = Vfiod(bus, tmp_path / "sim", tmp_path / "state", tmp_path / "vfiod.log",
                    "seed-x99", config)
    try:
        yield running.start()
    finally:
        running.stop()


def test_activatable_polkit_that_allows_lets_nobody_bind(
        make_activatable_polkit: Callable[..., None], bus: PrivateBus, daemon: Vfiod) -> None:
    make_activatable_polkit("org.vfiod1.manage")
    assert not name_has_owner(bus.address, POLKIT_NAME), "polkitd must not run before the call"
    name, _ = bind_as_nobody(daemon)
    assert name is None
    assert sim_driver(daemon.sim_root, GPU) == "vfio-pci"
    assert name_has_owner(bus.address, POLKIT_NAME), "the bus should have started polkitd"


def test_activatable_polkit_that_says_no_denies_nobody(
        make_activatable_polkit: Callable[..., None], bus: PrivateBus, daemon: Vfiod) -> None:
    make_activatable_polkit()
    assert not name_has_owner(bus.address, POLKIT_NAME)
    name, message = bind_as_nobody(daemon)
    assert name == "org.freedesktop.DBus.Error.AccessDenied"
    assert "polkit said no" in str(message)
    assert sim_driver(daemon.sim_root, GPU) == "nvidia"


def test_bus_without_any_polkit_service_is_root_only(bus: PrivateBus, daemon: Vfiod) -> None:
    name, message = bind_as_nobody(daemon)
    assert name == "org.freedesktop.DBus.Error.AccessDenied"
    assert "only root may manage devices when the system has no polkit" in str(message)
    assert sim_driver(daemon.sim_root, GPU) == "nvidia"
    root = daemon.call("Bind", "sa{sv}", GPU, "0")
    assert root.returncode == 0, root.stderr
    assert sim_driver(daemon.sim_root, GPU) == "vfio-pci"
