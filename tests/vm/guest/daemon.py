"""vfiod in the test guest: the real daemon on the guest's own kernel, on a private bus.

``GuestVfiod`` runs ``vfiod --address ADDR --state-dir DIR --config FILE`` without
``--simulate`` (RealHost("/") against the guest's /sys; the command line is
``vfiod.privatebus.vfiod_command(..., real_host=True)``) and stops it by its pid.
Clients are the real ones: ``busctl --address``, ``vfioctl --address`` and a dbus-fast
connection. Test guest only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from vfiod.privatebus import (
    PrivateBus,
    PrivateBusError,
    name_has_owner,
    name_owner_pid,
    stop_vfiod,
    vfiod_command,
)

from ..marker import GUEST_MARKER, in_test_guest

if not in_test_guest():  # a vfiod on the real host: never outside the guest
    raise RuntimeError(f"tests.vm.guest.daemon runs only in the test guest ({GUEST_MARKER})")

BUS_NAME = "org.vfiod1"
MANAGER = "/org/vfiod1"
MANAGER_IFACE = "org.vfiod1.Manager"
VFIOCTL = str(Path(sys.executable).with_name("vfioctl"))
#: Start-up under TCG: imports over 9p and a first scan cost seconds, more when cold.
START_TIMEOUT = 120.0
#: What vfiod logs once it owns its name and serves ("vfiod[info]: ready on ADDR in ...").
READY = "]: ready on "


class GuestVfiod:
    """One vfiod process on the guest's real kernel; start() again after kill()."""

    def __init__(self, bus: PrivateBus, workdir: Path, config: str = "",
                 write_timeout: float | None = None) -> None:
        self.bus = bus
        #: ``--write-timeout`` (None: the daemon's default).
        self.write_timeout = write_timeout
        self.state_dir = workdir / "state"
        self.config = workdir / "vfiod.toml"
        self.log_path = workdir / "vfiod.log"
        self.config.write_text(config)  # never the guest's /etc/vfiod
        self.proc: subprocess.Popen[bytes] | None = None
        #: Seconds each start took, from the process's launch to serving.
        self.start_times: list[float] = []

    @property
    def address(self) -> str:
        """The private bus's address."""
        return self.bus.address

    def start(self) -> GuestVfiod:
        """Start vfiod (the same state dir every time); returns once it serves.

        Readiness is its "ready" log line, then its pid owning org.vfiod1: cheaper
        under TCG than privatebus.start_vfiod's busctl every 50 ms, which would take a
        CPU from the daemon starting up.
        """
        assert self.proc is None or self.proc.poll() is not None, "vfiod is running"
        self.state_dir.mkdir(exist_ok=True)
        env = self.bus.env()
        for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            env.pop(inherited, None)
        ready_before = self.log().count(READY)
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                vfiod_command(self.bus, None, None, self.state_dir, self.config,
                              real_host=True, write_timeout=self.write_timeout),
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.log().count(READY) > ready_before
                       or self.proc is None or self.proc.poll() is not None,
                       START_TIMEOUT, "vfiod to start")
            if self.proc.poll() is not None or name_owner_pid(self.address) != self.proc.pid:
                raise PrivateBusError(f"vfiod did not start; its log ends:\n{self.log()[-2000:]}")
        except BaseException:
            self.stop()
            raise
        self.start_times.append(time.monotonic() - began)
        return self

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it hangs) and wait; the name is released afterwards."""
        if self.proc is not None:
            stop_vfiod(self.proc)
            self.proc = None
        wait_until(lambda: not name_has_owner(self.address), 10, "org.vfiod1 released")

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean-up of any kind."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log(self) -> str:
        """What the daemon logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- clients ------------------------------------------------------------------
    def busctl(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``busctl --address=ADDR ARGS``."""
        return subprocess.run(["busctl", f"--address={self.address}", "--timeout=110", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def call(self, method: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``busctl call org.vfiod1 /org/vfiod1 org.vfiod1.Manager METHOD ARGS``, JSON out."""
        return self.busctl("--json=short", "call", BUS_NAME, MANAGER, MANAGER_IFACE, method,
                           *args)

    def vfioctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``vfioctl --address ADDR ARGS``."""
        return subprocess.run([VFIOCTL, "--address", self.address, *args],
                              capture_output=True, text=True, timeout=180, check=False)

    def status(self) -> dict[str, dict[str, Any]]:
        """Manager.Status by address: driver, state, group and holder of each function."""
        result = self.call("Status")
        assert result.returncode == 0, result.stderr
        keys = ("address", "ids", "name", "driver", "state", "group", "holder")
        return {row[0]: dict(zip(keys, row)) for row in returned(result)}


def returned(result: subprocess.CompletedProcess[str]) -> Any:
    """The single value a successful ``busctl --json=short call`` returned."""
    assert result.returncode == 0, f"busctl failed: {result.stderr.strip()}"
    (data,) = json.loads(result.stdout)["data"]
    return data


def error_of(result: subprocess.CompletedProcess[str]) -> str:
    """The error message busctl printed for a failed call."""
    assert result.returncode != 0, f"the call succeeded: {result.stdout.strip()}"
    return result.stderr.strip()


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll *condition* until it is true; its value (AssertionError naming *what*)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return value


def run(coro: Any) -> Any:
    """Run a coroutine to its end (the tests are synchronous)."""
    return asyncio.run(coro)


# -- a dbus-fast client, for error names, timings and signals ----------------------------
async def manager_call(address: str, member: str, signature: str = "",
                       body: list[Any] | None = None) -> tuple[Message, float]:
    """One call to org.vfiod1.Manager; (the reply Message, seconds the call took)."""
    bus = await MessageBus(bus_address=address).connect()
    try:
        started = time.monotonic()
        reply = await bus.call(Message(destination=BUS_NAME, path=MANAGER,
                                       interface=MANAGER_IFACE, member=member,
                                       signature=signature, body=body or []))
        return reply, time.monotonic() - started
    finally:
        bus.disconnect()


def options(**values: bool) -> dict[str, Any]:
    """An a{sv} of boolean options for dbus-fast."""
    return {k: Variant("b", v) for k, v in values.items()}


def error(reply: Message) -> tuple[str, str]:
    """(D-Bus error name, message) of an error reply."""
    assert reply.message_type is MessageType.ERROR, f"the call succeeded: {reply.body}"
    return reply.error_name, reply.body[0] if reply.body else ""


def value(reply: Message) -> Any:
    """The single value of a successful reply."""
    assert reply.message_type is MessageType.METHOD_RETURN, \
        f"{reply.error_name}: {reply.body[0] if reply.body else ''}"
    return reply.body[0]


async def device_changed_after(address: str, action: Callable[[], None],
                               until: Callable[[list[tuple[str, str, str]]], bool],
                               timeout: float) -> tuple[list[tuple[str, str, str]], float]:
    """Subscribe to DeviceChanged, run *action* (on a thread), wait until *until* holds.

    Returns every DeviceChanged received and the seconds from the end of *action* until
    *until* first held.
    """
    bus = await MessageBus(bus_address=address).connect()
    seen: list[tuple[str, str, str]] = []
    arrived = asyncio.Event()

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.member == "DeviceChanged" \
                and msg.interface == MANAGER_IFACE:
            seen.append(tuple(msg.body))  # type: ignore[arg-type]
            arrived.set()

    try:
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',interface='{MANAGER_IFACE}',member='DeviceChanged'"]))
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        bus.add_message_handler(on_message)
        await asyncio.to_thread(action)
        done = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                while not until(seen):
                    arrived.clear()
                    await arrived.wait()
        except TimeoutError:
            raise AssertionError(f"no such DeviceChanged within {timeout:g} s; "
                                 f"received: {seen}") from None
        return seen, time.monotonic() - done
    finally:
        bus.disconnect()
