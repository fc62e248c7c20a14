"""The health record through the running daemon: properties with PropertiesChanged, the
quarantine in Bind's error, ``vfioctl reset --clear``, guest runs of simulated holders,
and the record kept across a daemon restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

from dbus_fast import MessageType, Variant

from vfiod.sim.holder import Holder, spawn_holder

from .helpers import (
    DEVICE_IFACE,
    SignalRecorder,
    Vfiod,
    call,
    client,
    device_path,
    knobs,
    wait_for,
)
from .vfioctl_helpers import error_line, vfioctl

USB = "0000:11:00.0"  # ASMedia USB for the guest: pm, then bus; alone in group 40
AUDIO = "0000:00:1b.0"  # onboard audio, alone in group 9
CONFIG = "[daemon]\nquarantine_after = 2\n\n[[device]]\nmatch = \"0000:11:00.0\"\nname = \"usb\"\n"
#: Two resets of USB fail: each climbs pm, then bus (each write of `reset` fails EIO),
#: then a remove and rescan of the slot (its `remove` write fails EIO).
TWO_FAILED_RESETS = knobs(fail=[{"path": f"/sys/bus/pci/devices/{USB}/reset",
                                 "errno": "EIO", "times": 4},
                                {"path": f"/sys/bus/pci/devices/{USB}/remove",
                                 "errno": "EIO", "times": 2}])


def fail_twice(daemon: Vfiod) -> None:
    assert daemon.call("Bind", "sa{sv}", USB, "0").returncode == 0
    for _ in range(2):
        result = daemon.call("Reset", "sa{sv}", USB, "0")
        assert result.returncode != 0 and "no reset method worked" in result.stderr, \
            result.stderr


def test_failed_resets_quarantine_the_device_and_bind_names_its_history(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start(**TWO_FAILED_RESETS)
    fail_twice(daemon)
    assert daemon.get_property(USB, "ConsecutiveResetFailures") == 2
    assert daemon.get_property(USB, "Quarantined") is True

    result = vfioctl(daemon.address, "bind", "usb")
    assert result.returncode == 10
    line = error_line(result)
    assert "is quarantined: its last 2 reset(s) failed in a row" in line
    assert "no reset method worked: pm: EIO; bus: EIO" in line
    assert f"vfioctl reset --clear {USB}" in line


def test_the_record_survives_a_daemon_restart(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start(**TWO_FAILED_RESETS)
    fail_twice(daemon)
    time_before = daemon.get_property(USB, "LastResetTime")
    assert daemon.stop() == 0

    daemon.start()  # the same state directory and simulated machine, no faults now
    assert daemon.get_property(USB, "ResetCount") == 2
    assert daemon.get_property(USB, "LastResetOutcome") == "failed"
    assert daemon.get_property(USB, "LastResetTime") == time_before
    assert daemon.get_property(USB, "Quarantined") is True
    result = daemon.call("Bind", "sa{sv}", USB, "0")
    assert result.returncode != 0 and f"{USB} is quarantined" in result.stderr


def test_vfioctl_reset_clear_lifts_the_quarantine(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start(**TWO_FAILED_RESETS)
    fail_twice(daemon)
    plain = vfioctl(daemon.address, "reset", "usb")
    assert plain.returncode == 0, plain.stderr  # a reset alone does not lift it
    assert daemon.get_property(USB, "Quarantined") is True

    cleared = vfioctl(daemon.address, "reset", "--clear", "usb")
    assert cleared.returncode == 0, cleared.stderr
    assert "reset (pm), healthy" in cleared.stdout
    assert daemon.get_property(USB, "Quarantined") is False
    assert daemon.get_property(USB, "ConsecutiveResetFailures") == 0
    assert daemon.get_property(USB, "ResetCount") == 4
    assert daemon.call("Bind", "sa{sv}", USB, "0").returncode == 0


def test_vfioctl_status_shows_the_record(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start(**TWO_FAILED_RESETS)
    fail_twice(daemon)
    result = vfioctl(daemon.address, "status", "usb")
    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[1].strip(): line.split("  ", 2)[-1].strip()
             for line in result.stdout.splitlines()[1:] if line.startswith("  ")
             and line.split("  ")[1].strip()}
    assert lines["resets"] == "2"
    assert lines["failed in a row"] == "2"
    assert lines["quarantined"].startswith("yes: 0000:11:00.0 is quarantined")
    as_json = json.loads(vfioctl(daemon.address, "status", "usb", "--json").stdout)
    assert (as_json["reset_count"], as_json["quarantined"]) == (2, True)


def test_reset_and_quarantine_come_with_properties_changed(vfiod: Vfiod) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with client(vfiod.address) as bus:
            recorder = await SignalRecorder(bus).start()
            reply = await call(bus, "Bind", "sa{sv}", [AUDIO, {}])
            assert reply.message_type is MessageType.METHOD_RETURN, reply.body
            reply = await call(bus, "Reset", "sa{sv}", [AUDIO, {}])
            assert reply.message_type is MessageType.METHOD_RETURN, reply.body
            return await recorder.wait(lambda: [
                c for c in recorder.properties_changed(AUDIO) if "ResetCount" in c])

    changes = asyncio.run(scenario())
    assert changes[0]["ResetCount"] == 1
    assert changes[0]["LastResetMethod"] == "flr"
    assert changes[0]["LastResetOutcome"] == "healthy"
    assert changes[0]["LastResetTime"] > 0


def test_reset_clear_is_a_boolean_option(vfiod: Vfiod) -> None:
    async def scenario() -> Any:
        async with client(vfiod.address) as bus:
            return await call(bus, "Reset", "sa{sv}", [AUDIO, {"clear": Variant("s", "yes")}])

    reply = asyncio.run(scenario())
    assert reply.error_name == "org.vfiod1.Error.InvalidArgument"
    assert "option 'clear' must be a boolean" in reply.body[0]


def guest_runs(daemon: Vfiod, address: str) -> list[list[Any]]:
    return daemon.get_property(address, "GuestRuns")


def run_guest(daemon: Vfiod, stop: Callable[[Holder], None]) -> list[Any]:
    assert daemon.call("Bind", "sa{sv}", AUDIO, "0").returncode == 0
    holder = spawn_holder(daemon.sim_root, ["/dev/vfio/9"], comm="qemu-system-x86")
    try:
        wait_for(lambda: [r for r in guest_runs(daemon, AUDIO) if r[2] == "running"], 10,
                 "a running guest run")
        stop(holder)  # not reaped until the daemon recorded how it ended
        return wait_for(lambda: [r for r in guest_runs(daemon, AUDIO)
                                 if r[2] != "running"], 10, "the run's end")[-1]
    finally:
        holder.close()


def test_a_guest_that_exits_cleanly_is_recorded_clean(vfiod: Vfiod) -> None:
    start, end, how = run_guest(vfiod, lambda h: os.kill(h.pid, signal.SIGTERM))
    assert how == "clean" and end >= start > 0
    assert vfiod.get_property(AUDIO, "State") == "vfio"


def test_a_guest_killed_with_sigkill_is_recorded_killed(vfiod: Vfiod) -> None:
    start, end, how = run_guest(vfiod, lambda h: os.kill(h.pid, signal.SIGKILL))
    assert how == "killed" and end >= start > 0


def test_guest_runs_are_device_properties_with_their_signature(vfiod: Vfiod) -> None:
    result = vfiod.busctl("introspect", "org.vfiod1", device_path(AUDIO), DEVICE_IFACE)
    rows = {line.split()[0]: line.split()[2] for line in result.stdout.splitlines()
            if line.startswith(".")}
    assert rows[".GuestRuns"] == "a(tts)"
    assert (rows[".ResetCount"], rows[".LastResetTime"], rows[".Quarantined"]) == \
        ("u", "t", "b")
