"""Handing the desktop's GPU over, end to end: a real dbus-daemon, vfiod on the
simulated seed-x99 (whose desktop session holds /dev/dri/card0 of 05:00.0), vfioctl
and a D-Bus client that records the Releasing signal."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType

from .helpers import (DEVICE_IFACE, MANAGER_IFACE, SignalRecorder, Vfiod, call, client,
                      device_path, knobs, options, sim_driver)
from .vfioctl_helpers import error_line, vfioctl

DESKTOP_GPU, DESKTOP_AUDIO = "0000:05:00.0", "0000:05:00.1"
POLITE = knobs(desktop_releases_on_remove=True)


def releasing(messages: list[Message]) -> list[list[Any]]:
    """The bodies of every Releasing signal recorded."""
    return [m.body for m in messages
            if m.member == "Releasing" and m.interface == MANAGER_IFACE]


def session_holder(daemon: Vfiod) -> str:
    """``Xorg (pid N)`` or ``kwin_wayland (pid N)``: who holds the desktop GPU."""
    holder = daemon.status()[DESKTOP_GPU]["holder"]
    assert re.fullmatch(r"\S+ \(pid \d+\)", holder), holder
    return holder


def test_a_forced_bind_signals_releasing_then_binds_once_the_desktop_let_go(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config="[handover]\ntimeout = 10\n", **POLITE).start()
    kwin = session_holder(daemon)
    assert kwin.startswith("kwin_wayland ")

    async def scenario() -> tuple[Message, list[Message]]:
        async with client(daemon.address) as bus:
            signals = await SignalRecorder(bus).start()
            reply = await call(bus, "Bind", "sa{sv}", [DESKTOP_GPU, options(force=True)])
            await signals.wait(lambda: any(p.get("Releasing") is False
                                           for p in signals.properties_changed(DESKTOP_GPU)))
            return reply, signals.messages

    began = time.monotonic()
    reply, messages = asyncio.run(scenario())
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    assert time.monotonic() - began < 8.0  # the close ended the wait, not the timeout
    assert releasing(messages) == [[DESKTOP_GPU, [kwin], 10000]]
    flags = [p["Releasing"] for m in messages if m.member == "PropertiesChanged"
             and m.path == device_path(DESKTOP_GPU) and m.body[0] == DEVICE_IFACE
             for p in [{k: v.value for k, v in m.body[1].items()}] if "Releasing" in p]
    assert flags == [True, False]
    assert (sim_driver(daemon.sim_root, DESKTOP_GPU),
            sim_driver(daemon.sim_root, DESKTOP_AUDIO)) == ("vfio-pci", "vfio-pci")


def test_vfioctl_bind_force_of_the_desktop_gpu_goes_ahead_with_a_desktop_that_lets_go(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**POLITE).start()
    result = vfioctl(daemon.address, "bind", "05:00.0", "--force")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(DESKTOP_GPU)
    assert daemon.status()[DESKTOP_GPU]["state"] == "vfio"


def test_vfioctl_bind_force_refuses_after_the_timeout_naming_the_holder_that_ignored_it(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config="[handover]\ntimeout = 1\n").start()
    xorg = session_holder(daemon)
    began = time.monotonic()
    result = vfioctl(daemon.address, "bind", "05:00.0", "--force")
    assert time.monotonic() - began >= 1.0
    assert result.returncode == 4, (result.stdout, result.stderr)  # in use
    # The job's lasting step (not a terminal: one plain line), then the error alone.
    waited, error = result.stderr.splitlines()
    assert waited == (f"asking the desktop to release the GPU, waiting for {xorg} to close "
                      f"{DESKTOP_GPU} (1 s)"), result.stderr
    line = error
    assert line.startswith("vfioctl: ") and "Traceback" not in result.stderr
    assert "did not release /dev/dri/card0 within 1 s" in line
    assert f"still held by {xorg}" in line
    assert sim_driver(daemon.sim_root, DESKTOP_GPU) == "nvidia"
    assert daemon.get_property(DESKTOP_GPU, "Releasing") is False
    assert daemon.status()[DESKTOP_GPU]["state"] == "host"


def test_vfioctl_bind_without_force_says_how_to_hand_the_gpu_over(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", "05:00.0")
    assert result.returncode == 4
    assert "use force to hand it over" in error_line(result)
    assert "Releasing" not in vfiod.log()


def test_a_forced_bind_of_a_gpu_nobody_holds_sends_no_releasing(vfiod: Vfiod) -> None:
    async def scenario() -> list[Message]:
        async with client(vfiod.address) as bus:
            signals = await SignalRecorder(bus).start()
            reply = await call(bus, "Bind", "sa{sv}", ["0000:06:00.0", options(force=True)])
            assert reply.message_type is MessageType.METHOD_RETURN, reply.body
            return signals.messages

    assert releasing(asyncio.run(scenario())) == []
