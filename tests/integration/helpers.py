"""Helpers for the integration tests: a running vfiod, busctl, a dbus-fast client, the sim tree."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from vfiod.privatebus import PrivateBus, VfiodProcess, start_vfiod, stop_vfiod

BUS_NAME = "org.vfiod1"
MANAGER = "/org/vfiod1"
MANAGER_IFACE = "org.vfiod1.Manager"
DEVICE_IFACE = "org.vfiod1.Device"
POLKIT_NAME = "org.freedesktop.PolicyKit1"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
#: The test-side launcher that runs vfiod with knobs armed in its simulated host.
LAUNCHER = [sys.executable, str(Path(__file__).with_name("launcher.py"))]
KNOBS_ENV = "VFIOD_SIM_TEST_KNOBS"


def device_path(address: str) -> str:
    """The Device object of a function."""
    return f"{MANAGER}/device/pci_" + address.replace(":", "_").replace(".", "_")


def sim_driver(sim_root: Path, address: str) -> str:
    """The driver the simulated kernel has a function on ("" for none)."""
    try:
        return os.path.basename(os.readlink(sim_root / "sys/bus/pci/devices" / address / "driver"))
    except OSError:
        return ""


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll *predicate* until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Vfiod:
    """One vfiod process on the test session's bus, over its own simulated machine."""

    bus: PrivateBus
    sim_root: Path
    state_dir: Path
    log_path: Path
    profile: str = "seed-x99"
    config: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: VfiodProcess | None = None

    @property
    def address(self) -> str:
        """The bus address."""
        return self.bus.address

    def start(self, **env: str) -> Vfiod:
        """Start (or restart) the daemon; extra environment for this start only.

        With knobs in the environment it runs through the test launcher, otherwise as
        vfiod's own ``python -m vfiod.daemon.main``.
        """
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**self.env, **env}
        self.proc = start_vfiod(self.bus, self.sim_root, self.profile, self.state_dir,
                                self.config, env, log=self.log_path,
                                program=LAUNCHER if KNOBS_ENV in env else None)
        return self

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc is None:
            return 0
        code = stop_vfiod(self.proc)
        return code

    def log(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def busctl(self, *args: str, user: str = "root", check: bool = False,
               timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``busctl --address=... ARGS`` as root or as nobody (uid 65534)."""
        prefix = NOBODY if user == "nobody" else []
        return subprocess.run(
            [*prefix, "busctl", f"--address={self.address}", "--timeout=30", *args],
            capture_output=True, text=True, timeout=timeout, check=check)

    def call(self, method: str, *args: str, user: str = "root",
             path: str = MANAGER, interface: str = MANAGER_IFACE
             ) -> subprocess.CompletedProcess[str]:
        """``busctl call org.vfiod1 PATH IFACE METHOD ARGS`` with JSON output."""
        return self.busctl("--json=short", "call", BUS_NAME, path, interface, method, *args,
                           user=user)

    def status(self) -> dict[str, dict[str, Any]]:
        """Manager.Status by address, each row as a dict."""
        result = self.call("Status")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)["data"][0]
        keys = ("address", "ids", "name", "driver", "state", "group", "holder")
        return {row[0]: dict(zip(keys, row)) for row in rows}

    def get_property(self, address: str, name: str) -> Any:
        """One property of a Device object, read with busctl."""
        result = self.busctl("--json=short", "get-property", BUS_NAME, device_path(address),
                             DEVICE_IFACE, name)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["data"]


# -- dbus-fast client ---------------------------------------------------------------------

@asynccontextmanager
async def client(address: str) -> AsyncIterator[MessageBus]:
    """A connected dbus-fast client, disconnected afterwards."""
    bus = await MessageBus(bus_address=address).connect()
    try:
        yield bus
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()


async def call(bus: MessageBus, member: str, signature: str = "", body: list[Any] | None = None,
               *, path: str = MANAGER, interface: str = MANAGER_IFACE) -> Message:
    """One method call to vfiod; the reply (METHOD_RETURN or ERROR), never raising."""
    return await bus.call(Message(destination=BUS_NAME, path=path, interface=interface,
                                  member=member, signature=signature, body=body or []))


def options(**values: bool) -> dict[str, Variant]:
    """An a{sv} of boolean options."""
    return {k: Variant("b", v) for k, v in values.items()}


class SignalRecorder:
    """Collects DeviceChanged, PropertiesChanged and ObjectManager signals from vfiod."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.messages: list[Message] = []
        self._event = asyncio.Event()

    async def start(self) -> SignalRecorder:
        """Subscribe (AddMatch) to every signal vfiod sends."""
        reply = await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',sender='{BUS_NAME}'"]))
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        self.bus.add_message_handler(self._on_message)
        return self

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL:
            self.messages.append(msg)
            self._event.set()

    def device_changed(self) -> list[tuple[str, str, str]]:
        """Every DeviceChanged so far, as (address, state, driver)."""
        return [tuple(m.body) for m in self.messages  # type: ignore[misc]
                if m.member == "DeviceChanged" and m.interface == MANAGER_IFACE]

    def states(self, address: str) -> list[str]:
        """The states DeviceChanged announced for one function, in order."""
        return [state for a, state, _driver in self.device_changed() if a == address]

    def properties_changed(self, address: str) -> list[dict[str, Any]]:
        """The changed-properties dicts of PropertiesChanged on one Device object."""
        return [{k: v.value for k, v in m.body[1].items()} for m in self.messages
                if m.member == "PropertiesChanged" and m.path == device_path(address)
                and m.body[0] == DEVICE_IFACE]

    async def wait(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until *predicate* (over what was recorded) is true."""
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                self._event.clear()
                await self._event.wait()
        return value


def knobs(**values: Any) -> Mapping[str, str]:
    """The environment that arms the daemon's simulated faults (see launcher.py)."""
    return {KNOBS_ENV: json.dumps(values)}


def polkit_allow(bus: PrivateBus, *actions: str) -> None:
    """Tell the mock polkitd (python-dbusmock's template) to allow these actions."""
    subprocess.run(
        ["busctl", f"--address={bus.address}", "call", POLKIT_NAME,
         "/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.DBus.Mock", "SetAllowed",
         "as", str(len(actions)), *actions], check=True, capture_output=True, text=True)
