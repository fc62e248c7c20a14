"""Runs vfiod's own main with test knobs armed in its simulated host.

A test cannot reach the SimHost inside a daemon process, so it starts the daemon
through this launcher (``python tests/integration/launcher.py`` + vfiod's usual
arguments) and passes knobs in the environment variable ``VFIOD_SIM_TEST_KNOBS``
(JSON). vfiod itself knows nothing of them: the launcher hands vfiod's main a host
opener that opens the simulated host as vfiod would, then arms it.

    VFIOD_SIM_TEST_KNOBS='{"write_timeout": 0.5,
                           "fail": [{"path": "/sys/bus/pci/drivers_probe", "errno": "EIO"}],
                           "delay": [{"path": "*/unbind", "seconds": 2}],
                           "crash_after": 3,
                           "reset_outcome": [["0000:06:00.0", "flr", "enotty"]],
                           "kill_device": ["0000:09:00.0"],
                           "uevent_queue_limit": 16,
                           "desktop_releases_on_remove": true,
                           "guest_used": ["0000:01:00.0"]}'

``desktop_releases_on_remove`` replaces the profile's desktop session (Xorg, which
ignores a ``remove`` uevent of its card) by one that honours it, as KWin does: a holder
of the same nodes named ``kwin_wayland`` that closes them at the remove uevent.

``crash_after``/``crash_before`` make the simulated kernel raise SimulatedCrash around
the n-th write; the launcher's hook turns that into ``os._exit(EXIT_KILLED)`` on the
spot, in the writing thread: no cleanup, no finally block, as a SIGKILL at that point.
"""

from __future__ import annotations

import argparse
import errno as errno_mod
import functools
import json
import os
import signal
import sys
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from vfiod.daemon import main as vfiod_main
from vfiod.host.base import Host
from vfiod.sim import SimHost, SimulatedCrash

ENV = "VFIOD_SIM_TEST_KNOBS"
#: The exit status of a process killed by SIGKILL, as a shell reports it.
EXIT_KILLED = 128 + signal.SIGKILL


class FailKnob(BaseModel):
    """The next *times* writes to paths matching *path* (fnmatch) fail with *errno*."""

    model_config = ConfigDict(extra="forbid")

    path: str
    errno: int
    times: int = 1

    @field_validator("errno", mode="before")
    @classmethod
    def _errno_by_name(cls, value: object) -> object:
        if isinstance(value, str):
            number = getattr(errno_mod, value.upper(), None)
            if not isinstance(number, int):
                raise ValueError(f"unknown errno name {value!r}")
            return number
        return value


class DelayKnob(BaseModel):
    """Writes to paths matching *path* take *seconds* longer (all, or the next *times*)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    seconds: float
    times: int | None = None


class Knobs(BaseModel):
    """Everything a test may ask of the daemon's simulated host."""

    model_config = ConfigDict(extra="forbid")

    write_timeout: float | None = None
    fail: list[FailKnob] = []
    delay: list[DelayKnob] = []
    crash_after: int | None = None
    crash_before: int | None = None
    reset_outcome: list[tuple[str, str, str]] = []
    kill_device: list[str] = []
    #: The daemon's uevent queue holds this many events before it loses some (ENOBUFS).
    uevent_queue_limit: int | None = None
    desktop_releases_on_remove: bool = False
    #: Functions a guest has used already: dying cards (profile dying-cards) misbehave
    #: at their next reset.
    guest_used: list[str] = []


def knobs_from_env(environ: Mapping[str, str] = os.environ) -> Knobs:
    """The knobs in $VFIOD_SIM_TEST_KNOBS (none when unset); ValueError when malformed."""
    text = environ.get(ENV, "").strip()
    if not text:
        return Knobs()
    try:
        return Knobs.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"{ENV} is not valid: {exc}") from None


def arm(sim: SimHost, knobs: Knobs) -> None:
    """Arm the simulated kernel's faults and outcomes."""
    for fail in knobs.fail:
        sim.faults.fail(fail.path, fail.errno, times=fail.times)
    for delay in knobs.delay:
        sim.faults.delay(delay.path, delay.seconds, times=delay.times)
    if knobs.crash_after is not None:
        sim.faults.crash_after(knobs.crash_after)
    if knobs.crash_before is not None:
        sim.faults.crash_before(knobs.crash_before)
    for address, method, outcome in knobs.reset_outcome:
        sim.kernel.set_reset_outcome(address, method, outcome)
    for address in knobs.kill_device:
        sim.kernel.kill_device(address)
    if knobs.uevent_queue_limit is not None:
        sim._hub.open = functools.partial(sim._hub.open,  # type: ignore[method-assign]
                                          limit=knobs.uevent_queue_limit)
    session = sim.machine.desktop
    if knobs.desktop_releases_on_remove and sim.desktop is not None and session is not None:
        sim.desktop.close()
        sim.desktop = sim.spawn_holder(list(session.paths), comm="kwin_wayland",
                                       release_on_remove=True)
    if knobs.guest_used:
        sim.kernel.guest_used(knobs.guest_used)


def die_at_simulated_crash(sim: SimHost) -> None:
    """Make a SimulatedCrash end the process where it is raised, as SIGKILL would."""
    write = sim._write  # the one place the simulated kernel raises it

    def write_or_die(path: str, value: str) -> None:
        try:
            write(path, value)
        except SimulatedCrash as crash:
            print(f"launcher: simulated crash: {crash}; exiting at once, as if killed",
                  file=sys.stderr, flush=True)
            os._exit(EXIT_KILLED)

    sim._write = write_or_die  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    """vfiod's main, its simulated host armed with the knobs in $VFIOD_SIM_TEST_KNOBS."""
    try:
        knobs = knobs_from_env()
    except ValueError as err:
        print(f"launcher: {err}", file=sys.stderr)
        return 2

    def open_armed_host(args: argparse.Namespace) -> Host:
        host = vfiod_main.open_host(args)
        if knobs != Knobs():
            if not isinstance(host, SimHost):
                host.close()
                raise ValueError(f"{ENV} needs --simulate")
            die_at_simulated_crash(host)
            arm(host, knobs)
        return host

    return vfiod_main.main(argv, host_opener=open_armed_host,
                           write_timeout=knobs.write_timeout)


if __name__ == "__main__":
    sys.exit(main())
