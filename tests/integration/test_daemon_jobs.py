"""Jobs through the running daemon: BindJob/ResetJob, JobFinished, Phase and WaitingFor, Cancel.

The one long scenario (a reset write that takes 60 s, as an FLR may) runs once; the
others use writes and holders of a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from vfiod.sim.holder import spawn_holder

from .helpers import (BUS_NAME, MANAGER, MANAGER_IFACE, SignalRecorder, Vfiod, call, client,
                      knobs, sim_driver)

JOB_IFACE = "org.vfiod1.Job"
ONBOARD_AUDIO = "0000:00:1b.0"  # snd_hda_intel, flr then pm; its own IOMMU group
SSATA = "0000:00:11.4"  # ahci, pm; the guest's disk, not mounted
GPU = "0000:06:00.0"


def reset_path(address: str) -> str:
    return f"/sys/bus/pci/devices/{address}/reset"


def job_finished(signals: SignalRecorder, job: str) -> list[Any] | None:
    """JobFinished's body for *job*, once it came."""
    for m in signals.messages:
        if m.member == "JobFinished" and m.interface == MANAGER_IFACE and m.body[0] == job:
            return list(m.body)
    return None


def job_changes(signals: SignalRecorder, job: str) -> list[dict[str, Any]]:
    """Every PropertiesChanged of *job*, as plain values."""
    return [{k: v.value for k, v in m.body[1].items()} for m in signals.messages
            if m.member == "PropertiesChanged" and m.path == job and m.body[0] == JOB_IFACE]


async def job_property(bus: MessageBus, job: str, name: str) -> Any:
    reply = await call(bus, "Get", "ss", [JOB_IFACE, name], path=job,
                       interface="org.freedesktop.DBus.Properties")
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    return reply.body[0].value


async def start_job(bus: MessageBus, method: str, device: str, **options: Variant) -> str:
    reply = await call(bus, method, "sa{sv}", [device, options])
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    return str(reply.body[0])


def busctl_plain(daemon: Vfiod, *args: str, timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
    """busctl with its own default call timeout (no --timeout unless *args* has one)."""
    return subprocess.run(["busctl", f"--address={daemon.address}", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_reset_whose_kernel_write_takes_60_s_finishes_as_a_job_and_status_answers_throughout(
        make_vfiod: Callable[..., Vfiod]) -> None:
    # Each device's reset write takes 60 s; the daemon waits for the kernel that long.
    daemon = make_vfiod(**knobs(write_timeout=120, delay=[
        {"path": reset_path(ONBOARD_AUDIO), "seconds": 60, "times": 1},
        {"path": reset_path(SSATA), "seconds": 60, "times": 1}])).start()
    synchronous: dict[str, subprocess.CompletedProcess[str]] = {}

    def reset_synchronously() -> None:
        # What a script does: the synchronous call, with the long timeout documented.
        synchronous["reply"] = busctl_plain(
            daemon, "--timeout=90", "--json=short", "call", BUS_NAME, MANAGER, MANAGER_IFACE,
            "Reset", "sa{sv}", SSATA, "0")

    async def scenario() -> tuple[list[Any], list[float], list[dict[str, Any]]]:
        async with client(daemon.address) as bus:
            signals = await SignalRecorder(bus).start()
            # busctl with its default (25 s) timeout: the path comes back at once.
            began = time.monotonic()
            started = await asyncio.to_thread(
                busctl_plain, daemon, "--json=short", "call", BUS_NAME, MANAGER,
                MANAGER_IFACE, "ResetJob", "sa{sv}", ONBOARD_AUDIO, "0")
            assert started.returncode == 0, started.stderr
            assert time.monotonic() - began < 5
            job = json.loads(started.stdout)["data"][0]
            assert job.startswith("/org/vfiod1/job/")
            sync = threading.Thread(target=reset_synchronously)
            sync.start()
            # Status answers throughout: one call a second, each timed.
            latencies = []
            while job_finished(signals, job) is None:
                began = time.monotonic()
                reply = await call(bus, "Status")
                latencies.append(time.monotonic() - began)
                assert reply.message_type is MessageType.METHOD_RETURN
                if time.monotonic() - began > 100:
                    raise AssertionError("no JobFinished after 100 s")
                await asyncio.sleep(1.0)
            await asyncio.to_thread(sync.join, 100)
            return job_finished(signals, job) or [], latencies, job_changes(signals, job)

    finished, latencies, changes = asyncio.run(scenario())
    job, result, devices, error = finished
    assert (result, devices, error) == ("done", [ONBOARD_AUDIO], "")
    assert len(latencies) >= 30, latencies  # about one a second for a minute
    # Each answer within a few seconds even on a loaded machine (idle: a few ms).
    assert max(latencies) < 5.0, latencies
    # Phase and WaitingFor changed as it went: the reset step, then the write in the kernel.
    assert any(c.get("Phase") == f"resetting {ONBOARD_AUDIO} by flr" for c in changes)
    assert any(c.get("WaitingFor") == f"the kernel: writing 1 to {reset_path(ONBOARD_AUDIO)}"
               for c in changes)
    assert changes[-1]["Result"] == "done"
    reply = synchronous["reply"]
    assert reply.returncode == 0, reply.stderr
    assert json.loads(reply.stdout)["data"] == ["pm"]


def test_jobs_lists_a_running_job_and_a_sync_call_that_timed_out_leaves_its_job_running(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(delay=[
        {"path": reset_path(ONBOARD_AUDIO), "seconds": 3, "times": 1}])).start()

    async def scenario() -> tuple[list[str], list[Any]]:
        async with client(daemon.address) as bus:
            signals = await SignalRecorder(bus).start()
            # A client whose call times out (and goes away) cancels nothing.
            gave_up = await asyncio.to_thread(
                busctl_plain, daemon, "--timeout=1", "call", BUS_NAME, MANAGER, MANAGER_IFACE,
                "Reset", "sa{sv}", ONBOARD_AUDIO, "0")
            assert gave_up.returncode != 0
            assert "Connection timed out" in gave_up.stderr or "timed out" in gave_up.stderr
            reply = await call(bus, "Jobs")
            running = list(reply.body[0])
            await signals.wait(lambda: any(m.member == "JobFinished" for m in signals.messages),
                               timeout=10)
            return running, next(list(m.body) for m in signals.messages
                                 if m.member == "JobFinished")

    running, finished = asyncio.run(scenario())
    assert running == ["/org/vfiod1/job/1"]
    assert finished == ["/org/vfiod1/job/1", "done", [ONBOARD_AUDIO], ""]
    assert daemon.status()[ONBOARD_AUDIO]["state"] == "host"


def test_cancel_of_a_job_waiting_for_a_holder_stops_it_and_nothing_moves(vfiod: Vfiod) -> None:
    with spawn_holder(vfiod.sim_root, ["/dev/snd/pcmC0D0p"], comm="aplay") as player:
        async def scenario() -> tuple[str, list[Any], str, list[str]]:
            async with client(vfiod.address) as bus:
                signals = await SignalRecorder(bus).start()
                job = await start_job(bus, "BindJob", ONBOARD_AUDIO, wait=Variant("u", 60))
                waiting = f"aplay (pid {player.pid}) to release {ONBOARD_AUDIO}"
                await signals.wait(lambda: any(c.get("WaitingFor") == waiting
                                               for c in job_changes(signals, job)))
                reply = await call(bus, "Cancel", "o", [job])
                assert reply.message_type is MessageType.METHOD_RETURN, reply.body
                await signals.wait(lambda: job_finished(signals, job), timeout=5)
                jobs = await call(bus, "Jobs")
                return job, job_finished(signals, job) or [], \
                    await job_property(bus, job, "Phase"), list(jobs.body[0])

        job, (_, result, devices, error), phase, running = asyncio.run(scenario())
    assert (result, phase, running) == ("cancelled", "cancelled", [])
    assert error.startswith("cancelled while checking that the host does not use "
                            f"{ONBOARD_AUDIO}")
    assert sim_driver(vfiod.sim_root, ONBOARD_AUDIO) == "snd_hda_intel"
    assert devices == [ONBOARD_AUDIO]


def test_without_wait_a_held_device_is_refused_at_once_as_before(vfiod: Vfiod) -> None:
    with spawn_holder(vfiod.sim_root, ["/dev/snd/pcmC0D0p"], comm="aplay") as player:
        result = vfiod.call("Bind", "sa{sv}", ONBOARD_AUDIO, "0")
    assert result.returncode != 0
    assert "org.vfiod1.Error.InUse" in result.stderr or "held open by" in result.stderr
    assert f"aplay (pid {player.pid})" in result.stderr


def test_cancel_during_a_blocked_kernel_write_says_it_cannot_and_the_job_goes_on(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(delay=[
        {"path": reset_path(ONBOARD_AUDIO), "seconds": 3, "times": 1}])).start()

    async def scenario() -> tuple[Message, list[Any]]:
        async with client(daemon.address) as bus:
            signals = await SignalRecorder(bus).start()
            job = await start_job(bus, "ResetJob", ONBOARD_AUDIO)
            await signals.wait(lambda: any(str(c.get("WaitingFor", "")).endswith("/reset")
                                           for c in job_changes(signals, job)))
            refused = await call(bus, "Cancel", "o", [job])
            await signals.wait(lambda: job_finished(signals, job), timeout=10)
            return refused, job_finished(signals, job) or []

    refused, finished = asyncio.run(scenario())
    assert refused.message_type is MessageType.ERROR
    assert refused.error_name == "org.vfiod1.Error.Failed"
    assert refused.body[0] == (
        "/org/vfiod1/job/1: cannot cancel now: it is blocked in a kernel write, which cannot "
        f"be interrupted (writing 1 to {reset_path(ONBOARD_AUDIO)}); it goes on when the "
        "kernel returns, and Cancel can stop it at the next step")
    assert finished[1:] == ["done", [ONBOARD_AUDIO], ""]


def test_a_failed_job_reports_the_error_name_the_synchronous_call_raises(vfiod: Vfiod) -> None:
    async def scenario() -> list[Any]:
        async with client(vfiod.address) as bus:
            signals = await SignalRecorder(bus).start()
            # The root filesystem's controller: a hard guard.
            job = await start_job(bus, "BindJob", "0000:00:1f.2")
            await signals.wait(lambda: job_finished(signals, job), timeout=10)
            return job_finished(signals, job) or []

    _, result, _devices, error = asyncio.run(scenario())
    assert result == "org.vfiod1.Error.InUse"
    assert "the host needs it" in error


def test_a_job_is_announced_by_the_object_manager_with_its_properties(vfiod: Vfiod) -> None:
    async def scenario() -> dict[str, Any]:
        async with client(vfiod.address) as bus:
            signals = await SignalRecorder(bus).start()
            job = await start_job(bus, "BindJob", GPU)
            await signals.wait(lambda: job_finished(signals, job), timeout=10)
            added = next(m.body[1] for m in signals.messages
                         if m.member == "InterfacesAdded" and m.body[0] == job)
            reply = await call(bus, "GetManagedObjects",
                               interface="org.freedesktop.DBus.ObjectManager")
            assert job in reply.body[0]
            return {k: v.value for k, v in added[JOB_IFACE].items()}

    added = asyncio.run(scenario())
    assert added["Operation"] == "bind"
    assert added["Devices"] == [GPU, "0000:06:00.1"]
    assert added["Result"] == "" and added["StartedAt"] > 1_700_000_000_000_000


def test_a_job_queued_behind_another_on_its_group_waits_for_it_and_cancel_stops_it_at_once(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(delay=[
        {"path": reset_path(ONBOARD_AUDIO), "seconds": 3, "times": 1}])).start()

    async def scenario() -> tuple[list[Any], list[Any] | None, str]:
        async with client(daemon.address) as bus:
            signals = await SignalRecorder(bus).start()
            first = await start_job(bus, "ResetJob", ONBOARD_AUDIO)
            await signals.wait(lambda: any(str(c.get("WaitingFor", "")).endswith("/reset")
                                           for c in job_changes(signals, first)))
            second = await start_job(bus, "BindJob", ONBOARD_AUDIO)
            await signals.wait(lambda: any(
                c.get("WaitingFor") == "other operations on the same IOMMU group to finish"
                for c in job_changes(signals, second)))
            reply = await call(bus, "Cancel", "o", [second])
            assert reply.message_type is MessageType.METHOD_RETURN, reply.body
            await signals.wait(lambda: job_finished(signals, second), timeout=2)
            # The first was not waiting on the second: it is still in its write.
            return job_finished(signals, second) or [], job_finished(signals, first), \
                await job_property(bus, second, "Phase")

    cancelled, first_done, phase = asyncio.run(scenario())
    assert cancelled[1:] == ["cancelled", [ONBOARD_AUDIO],
                             "cancelled before it started: nothing was changed"]
    assert first_done is None and phase == "cancelled"
    assert sim_driver(daemon.sim_root, ONBOARD_AUDIO) == "snd_hda_intel"


def test_nobody_may_list_jobs_but_not_start_or_cancel_one_without_polkit(vfiod: Vfiod) -> None:
    listed = vfiod.call("Jobs", user="nobody")
    started = vfiod.call("BindJob", "sa{sv}", GPU, "0", user="nobody")
    cancelled = vfiod.call("Cancel", "o", "/org/vfiod1/job/1", user="nobody")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["data"] == [[]]
    for denied in (started, cancelled):
        assert denied.returncode != 0
        assert "Access denied" in denied.stderr or "AccessDenied" in denied.stderr, denied.stderr
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_a_wait_over_an_hour_is_an_invalid_argument(vfiod: Vfiod) -> None:
    result = vfiod.call("BindJob", "sa{sv}", GPU, "1", "wait", "u", "3601")
    assert result.returncode != 0
    assert "option 'wait' is at most 3600 seconds, not 3601" in result.stderr
