"""Test-only knobs for the simulated host inside a running daemon.

A test cannot reach the SimHost object that lives in the vfiod process, so it passes
knobs in the environment variable ``VFIOD_SIM_TEST_KNOBS`` (JSON). The variable is
read only with ``--simulate``: a daemon on a real host never looks at it.

    VFIOD_SIM_TEST_KNOBS='{"write_timeout": 0.5,
                           "fail": [{"path": "/sys/bus/pci/drivers_probe", "errno": "EIO"}],
                           "delay": [{"path": "*/unbind", "seconds": 2}],
                           "crash_after": 3,
                           "reset_outcome": [["0000:06:00.0", "flr", "enotty"]],
                           "kill_device": ["0000:09:00.0"]}'

``crash_after``/``crash_before`` make the simulated kernel raise SimulatedCrash around
the n-th write; the daemon treats it as its own death (exit at once, no cleanup), which
is what a SIGKILL at that point would do.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from vfiod.host.base import Host

ENV = "VFIOD_SIM_TEST_KNOBS"


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


def knobs_from_env(environ: Mapping[str, str] = os.environ) -> Knobs:
    """The knobs in $VFIOD_SIM_TEST_KNOBS (none when unset); ValueError when malformed."""
    text = environ.get(ENV, "").strip()
    if not text:
        return Knobs()
    try:
        return Knobs.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"{ENV} is not valid: {exc}") from None


def make_sim_host(profile: str, root: str | os.PathLike[str] | None) -> Host:
    """The simulated host for *profile*, built in (or re-attached from) *root*."""
    from vfiod.sim import SimHost

    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    return SimHost(profile=profile, root=root)


def apply(host: Host, knobs: Knobs) -> None:
    """Arm the simulated kernel's faults and outcomes."""
    sim = host  # a SimHost: faults and kernel are its test surface
    for fail in knobs.fail:
        sim.faults.fail(fail.path, fail.errno, times=fail.times)  # type: ignore[attr-defined]
    for delay in knobs.delay:
        sim.faults.delay(delay.path, delay.seconds, times=delay.times)  # type: ignore[attr-defined]
    if knobs.crash_after is not None:
        sim.faults.crash_after(knobs.crash_after)  # type: ignore[attr-defined]
    if knobs.crash_before is not None:
        sim.faults.crash_before(knobs.crash_before)  # type: ignore[attr-defined]
    for address, method, outcome in knobs.reset_outcome:
        sim.kernel.set_reset_outcome(address, method, outcome)  # type: ignore[attr-defined]
    for address in knobs.kill_device:
        sim.kernel.kill_device(address)  # type: ignore[attr-defined]


def fatal_exceptions() -> tuple[type[BaseException], ...]:
    """Exceptions that stand for the daemon being killed on the spot."""
    from vfiod.sim import SimulatedCrash

    return (SimulatedCrash,)
