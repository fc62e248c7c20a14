"""``vfioctl monitor`` follows changes made by anyone, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncio

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from .helpers import Vfiod, client
from .vfioctl_helpers import vfioctl_argv

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"


class Follower:
    """A running ``vfioctl monitor`` whose stdout lines can be awaited."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._buffer = ""

    def wait_line(self, predicate: Callable[[str], Any], timeout: float = 30.0) -> str:
        """The first line (seen so far or arriving within *timeout*) matching."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line within {timeout:g} s; got "
                                     f"{self.lines!r}")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536).decode()
                if not chunk:
                    raise AssertionError(f"monitor ended (status {self.proc.wait()}); "
                                         f"got {self.lines!r}")
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split("\n")
                self.lines += complete


@contextmanager
def monitor(daemon: Vfiod, *args: str) -> Iterator[Follower]:
    """``vfioctl monitor ARGS`` running until the block ends (then killed if still up)."""
    proc = subprocess.Popen(vfioctl_argv(daemon.address, "monitor", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield Follower(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def json_event(event: str, **fields: Any) -> Callable[[str], bool]:
    """A predicate for a JSON line of that event with those fields."""
    def matches(line: str) -> bool:
        obj = json.loads(line)
        return obj.get("event") == event and all(obj.get(k) == v for k, v in fields.items())
    return matches


def test_monitor_json_prints_a_line_for_a_bind_made_by_busctl(vfiod: Vfiod) -> None:
    with monitor(vfiod, "--json") as follower:
        ready = json.loads(follower.wait_line(json_event("Ready")))
        assert ready["devices"] == len(vfiod.status())
        assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
        line = follower.wait_line(json_event("DeviceChanged", address=GPU, state="vfio",
                                             driver="vfio-pci"))
        assert "T" in json.loads(line)["time"]
        follower.wait_line(json_event("DeviceChanged", address=AUDIO, driver="vfio-pci"))
        follower.wait_line(lambda l: json_event("PropertiesChanged", address=GPU)(l)
                           and json.loads(l)["changed"].get("driver") == "vfio-pci")
        assert all(json.loads(l) for l in follower.lines)  # every line is one object


def test_monitor_shows_a_busy_state_while_an_operation_runs(vfiod: Vfiod) -> None:
    with monitor(vfiod, "--json") as follower:
        follower.wait_line(json_event("Ready"))
        assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
        follower.wait_line(json_event("DeviceChanged", address=GPU, state="busy"))


def test_monitor_text_prints_one_line_per_device_change(vfiod: Vfiod) -> None:
    with monitor(vfiod) as follower:
        follower.wait_line(lambda l: l.startswith("following "))
        assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
        line = follower.wait_line(lambda l: GPU in l and "state busy -> vfio" in l)
        assert "GeForce GTX 1080 Ti" in line
        # Under load a uevent may publish the audio function unbound on its way (a line
        # "snd_hda_intel -> -", then "- -> vfio-pci"): only where it ends is fixed.
        follower.wait_line(lambda l: AUDIO in l and "-> vfio-pci" in l)


def test_monitor_reports_vfiod_leaving_the_bus(vfiod: Vfiod) -> None:
    with monitor(vfiod, "--json") as follower:
        follower.wait_line(json_event("Ready"))
        vfiod.stop()
        follower.wait_line(json_event("VfiodStopped"))
        assert follower.proc.poll() is None  # it waits for vfiod to come back


def test_monitor_ends_with_status_0_on_sigterm_and_on_ctrl_c(vfiod: Vfiod) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        with monitor(vfiod) as follower:
            follower.wait_line(lambda l: l.startswith("following "))
            follower.proc.send_signal(signum)
            assert follower.proc.wait(10) == 0
            assert follower.proc.stderr is not None
            assert follower.proc.stderr.read() == ""


async def _unique_name_of(bus: MessageBus, pid: int) -> str:
    """The unique bus name of the connection process *pid* made."""
    dbus = {"destination": "org.freedesktop.DBus", "path": "/org/freedesktop/DBus",
            "interface": "org.freedesktop.DBus"}
    names = (await bus.call(Message(member="ListNames", **dbus))).body[0]
    for name in names:
        if not name.startswith(":"):
            continue
        reply = await bus.call(Message(member="GetConnectionUnixProcessID", signature="s",
                                       body=[name], **dbus))
        if reply.message_type is MessageType.METHOD_RETURN and reply.body[0] == pid:
            return name
    raise AssertionError(f"no connection of pid {pid} on the bus")


def _spoof(address: str, pid: int) -> None:
    """Send forged and malformed signals straight to the connection of process *pid*."""
    async def run() -> None:
        async with client(address) as bus:
            target = await _unique_name_of(bus, pid)
            forged = [
                ("/org/vfiod1", "org.vfiod1.Manager", "DeviceChanged", "sss",
                 [GPU, "SPOOFED", "SPOOFED"]),
                ("/org/freedesktop/DBus", "org.freedesktop.DBus", "NameOwnerChanged", "sss",
                 ["org.vfiod1", ":1.1", ""]),
                ("/org/vfiod1", "org.vfiod1.Manager", "DeviceChanged", "i", [7]),
                ("/org/vfiod1/device/pci_0000_06_00_0", "org.freedesktop.DBus.Properties",
                 "PropertiesChanged", "sa{sv}as",
                 ["org.vfiod1.Device", {"State": Variant("s", "SPOOFED")}, []]),
                ("/org/vfiod1", "org.freedesktop.DBus.ObjectManager", "InterfacesAdded",
                 "oa{sa{sv}}", ["/org/vfiod1/device/x",
                                {"org.vfiod1.Device": {"Address": Variant("s", "SPOOFED")}}]),
            ]
            for path, iface, member, sig, body in forged:
                await bus.send(Message(message_type=MessageType.SIGNAL, destination=target,
                                       path=path, interface=iface, member=member,
                                       signature=sig, body=body))
            # A round trip to the bus: everything above has been routed before it returns.
            await bus.call(Message(destination="org.freedesktop.DBus",
                                   path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="GetId"))
    asyncio.run(run())


def test_monitor_believes_only_vfiod_and_survives_malformed_signals(vfiod: Vfiod) -> None:
    for mode in ([], ["--json"]):
        with monitor(vfiod, *mode) as follower:
            follower.wait_line(lambda l: "following" in l or '"Ready"' in l)
            _spoof(vfiod.address, follower.proc.pid)
            # A real change after the forged ones: its line comes after theirs would have.
            assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
            follower.wait_line(lambda l: GPU in l and "vfio-pci" in l)
            assert vfiod.call("Unbind", "sa{sv}", GPU, "0").returncode == 0
            follower.wait_line(lambda l: GPU in l and "nvidia" in l)
            assert not [l for l in follower.lines if "SPOOFED" in l or "left the bus" in l
                        or "VfiodStopped" in l], follower.lines
            assert follower.proc.poll() is None
            follower.proc.terminate()
            assert follower.proc.wait(10) == 0
            assert follower.proc.stderr is not None
            assert follower.proc.stderr.read() == ""


def test_monitor_into_a_pipe_closed_by_its_reader_exits_at_once_with_status_0(
        vfiod: Vfiod) -> None:
    for mode in ([], ["--json"]):
        with monitor(vfiod, *mode) as follower:
            follower.wait_line(lambda l: "following" in l or '"Ready"' in l)
            assert follower.proc.stdout is not None
            follower.proc.stdout.close()  # what head -1 does after its line
            started = time.monotonic()
            assert follower.proc.wait(10) == 0
            assert time.monotonic() - started < 5.0
            assert follower.proc.stderr is not None
            assert follower.proc.stderr.read() == ""
