"""vfioctl and vfiod's jobs: start an operation as a job, show it live, list running jobs.

``bind``, ``unbind`` and ``reset`` start a job (Manager.BindJob, ...) and follow it by
its signals, so that no operation meets D-Bus's 25-second call timeout however long the
kernel takes. On a terminal one live line on stderr shows the job's phase, what it waits
for and the time so far, redrawn in place each second; into a pipe or file a plain line
goes to stderr once a step has lasted a second (quick steps print nothing, so scripts
see only the outcome on stdout, as before). Ctrl-C stops following, not the job: it
says how to follow it. ``--no-wait`` prints the job's path and returns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from dbus_fast import Message, MessageType, Variant

from vfiod.contract import JOB_INTERFACE, JOB_PATH_PREFIX
from vfiod.ctl import exitcodes, output
from vfiod.ctl.client import (BUS_NAME, DBUS_NAME, MANAGER_IFACE, MANAGER_PATH,
                              PROPERTIES_IFACE, UNKNOWN_OBJECT_ERRORS, VfiodClient)
from vfiod.ctl.devices import unwrap
from vfiod.ctl.exitcodes import CtlError
from vfiod.printable import printable

#: The Manager methods that start each operation as a job.
JOB_METHODS = {"bind": "BindJob", "unbind": "UnbindJob", "reset": "ResetJob"}
#: What a job's end is called when it did what it was asked.
DONE = "done"
CANCELLED = "cancelled"
#: How long a step must last before a plain (not a terminal) line reports it.
PLAIN_AFTER = 1.0
#: How often the live line is redrawn (its seconds count up).
TICK = 1.0

JOB_MATCH_RULES = (
    f"type='signal',sender='{BUS_NAME}',interface='{MANAGER_IFACE}',member='JobFinished'",
    f"type='signal',sender='{BUS_NAME}',interface='{PROPERTIES_IFACE}',"
    f"member='PropertiesChanged',path_namespace='{MANAGER_PATH}/job'",
    f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
    f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
)


@dataclass
class JobState:
    """What vfioctl knows of one job (its properties)."""

    path: str
    operation: str = ""
    devices: list[str] = field(default_factory=list)
    phase: str = ""
    started_at: int = 0
    waiting_for: str = ""
    result: str = ""
    error: str = ""
    method: str = ""

    def update(self, props: dict[str, Any]) -> None:
        """Take Job properties (plain values, by D-Bus name)."""
        for name, attr in (("Operation", "operation"), ("Phase", "phase"),
                           ("WaitingFor", "waiting_for"), ("Result", "result"),
                           ("Error", "error"), ("Method", "method")):
            if name in props:
                setattr(self, attr, printable(str(props[name])))
        if "Devices" in props:
            self.devices = [printable(str(d)) for d in props["Devices"]]
        if "StartedAt" in props:
            self.started_at = int(props["StartedAt"])

    @property
    def number(self) -> str:
        """``7`` for /org/vfiod1/job/7."""
        return self.path.removeprefix(JOB_PATH_PREFIX)

    def elapsed(self, now: float | None = None) -> int:
        """Whole seconds since the job started (by vfiod's clock of its start)."""
        if not self.started_at:
            return 0
        return max(0, int((now if now is not None else time.time())
                          - self.started_at / 1e6))

    def progress_text(self, now: float | None = None) -> str:
        """``PHASE, waiting for X, 12 s``."""
        parts = [self.phase or "starting"]
        if self.waiting_for:
            parts.append(f"waiting for {self.waiting_for}")
        parts.append(f"{self.elapsed(now)} s")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The job as one JSON object (``vfioctl jobs --json``)."""
        return {"job": self.path, "operation": self.operation, "devices": self.devices,
                "phase": self.phase, "waiting_for": self.waiting_for,
                "started_at_us": self.started_at, "result": self.result,
                "error": self.error}


def job_options(args: argparse.Namespace) -> dict[str, Variant]:
    """The a{sv} of a bind, unbind or reset command line."""
    options: dict[str, Variant] = {}
    if args.command in ("bind", "unbind"):
        options["group"] = Variant("b", not args.no_group)
    if getattr(args, "force", False):
        options["force"] = Variant("b", True)
    if getattr(args, "clear", False):
        options["clear"] = Variant("b", True)
    if getattr(args, "wait", None):
        options["wait"] = Variant("u", int(args.wait))
    return options


class LiveLine:
    """The job's progress on stderr: one line redrawn in place on a terminal, plain
    lines (for steps that last) otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._shown = ""
        self._since = time.monotonic()
        self._step: tuple[str, str] = ("", "")
        self._printed_step: tuple[str, str] | None = None

    def show(self, job: JobState) -> None:
        """Show the job's state now (called on each change and each tick)."""
        step = (job.phase, job.waiting_for)
        if step != self._step:
            self._step, self._since = step, time.monotonic()
        if self.tty:
            # One column short of the width: a full line would wrap the cursor.
            text = output.fit(job.progress_text(), shutil.get_terminal_size().columns - 1)
            if text != self._shown:
                self.stream.write("\r\x1b[K" + text)
                self.stream.flush()
                self._shown = text
        elif (time.monotonic() - self._since >= PLAIN_AFTER and step != self._printed_step
              and not job.result):
            self._printed_step = step
            text = job.phase + (f", waiting for {job.waiting_for}" if job.waiting_for else "")
            self.stream.write(f"{text} ({job.elapsed()} s)\n")
            self.stream.flush()

    def clear(self) -> None:
        """Remove the live line (before the outcome is printed)."""
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = ""


class JobFollower:
    """Follows one job's signals until JobFinished (or vfiod leaves the bus)."""

    def __init__(self, client: VfiodClient) -> None:
        self.client = client
        self.job: JobState | None = None
        self._early: list[Message] = []
        self._changed = asyncio.Event()
        self.finished = asyncio.Event()
        self.vfiod_gone = False

    async def subscribe(self) -> None:
        """Route job signals here (before the job starts, so that none is missed)."""
        self.client.on_message(self._on_message)
        for rule in JOB_MATCH_RULES:
            await self.client.add_match(rule)

    def attach(self, path: str) -> JobState:
        """The job to follow; signals that came before its path was known apply now."""
        self.job = JobState(path)
        early, self._early = self._early, []
        for msg in early:
            self._on_message(msg)
        return self.job

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.sender == DBUS_NAME:
            if msg.signature == "sss" and msg.body[0] == BUS_NAME and not msg.body[2]:
                self.vfiod_gone = True
                self.finished.set()
            return
        if self.job is None:
            self._early.append(msg)
            return
        if (msg.member == "JobFinished" and msg.interface == MANAGER_IFACE
                and msg.signature == "osass" and msg.body[0] == self.job.path):
            self.job.update({"Result": msg.body[1], "Devices": msg.body[2],
                             "Error": msg.body[3]})
            self.finished.set()
        elif (msg.member == "PropertiesChanged" and msg.path == self.job.path
              and msg.signature == "sa{sv}as" and msg.body[0] == JOB_INTERFACE):
            self.job.update(unwrap(msg.body[1]))
            self._changed.set()

    async def refresh(self) -> None:
        """Read the job's properties (it may have moved on, or ended, already)."""
        assert self.job is not None
        try:
            (props,) = await self.client.call(self.job.path, PROPERTIES_IFACE, "GetAll", "s",
                                              [JOB_INTERFACE])
        except CtlError as err:
            if err.dbus_name in UNKNOWN_OBJECT_ERRORS:
                return  # gone already: JobFinished came (or comes) with the outcome
            raise
        self.job.update(unwrap(props))
        if self.job.result:
            self.finished.set()

    async def follow(self, line: LiveLine | None, limit: float | None) -> JobState:
        """Wait for the end, showing progress on *line*; CtlError on the way out."""
        assert self.job is not None
        deadline = None if limit is None else time.monotonic() + limit
        while not self.finished.is_set():
            if line is not None:
                line.show(self.job)
            self._changed.clear()
            wait = TICK if deadline is None else min(TICK, deadline - time.monotonic())
            if wait <= 0:
                raise CtlError(f"{self.job.operation or 'the job'} did not finish within "
                               f"{limit:g} s (--timeout); job {self.job.path} goes on in "
                               "vfiod: follow it with `vfioctl jobs` or `vfioctl monitor`",
                               exitcodes.TIMEOUT)
            changed = asyncio.ensure_future(self._changed.wait())
            finished = asyncio.ensure_future(self.finished.wait())
            try:
                await asyncio.wait({changed, finished}, timeout=wait,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                finished.cancel()
        if self.vfiod_gone and not self.job.result:
            raise CtlError(f"vfiod left the bus while job {self.job.path} ran (see "
                           "vfioctl status once it is back)", exitcodes.UNREACHABLE)
        return self.job


async def start_job(client: VfiodClient, args: argparse.Namespace,
                    follower: JobFollower | None) -> str | None:
    """Start the command's operation as a job; its path (None when this vfiod has no
    jobs: an older daemon, which the caller then calls synchronously)."""
    method = JOB_METHODS[args.command]
    if follower is not None:
        await follower.subscribe()
    try:
        (path,) = await client.call(MANAGER_PATH, MANAGER_IFACE, method, "sa{sv}",
                                    [args.device, job_options(args)])
    except CtlError as err:
        if err.dbus_name == "org.freedesktop.DBus.Error.UnknownMethod":
            return None
        raise
    return str(path)


async def run_job(client: VfiodClient, args: argparse.Namespace) -> JobState | str | None:
    """Start the operation as a job and follow it to its end.

    Returns the finished job (raises CtlError with the operation's exit code when it
    failed), its path alone with ``--no-wait``, or None when this vfiod has no jobs.
    """
    if getattr(args, "no_wait", False):
        return await start_job(client, args, None)
    follower = JobFollower(client)
    path = await start_job(client, args, follower)
    if path is None:
        return None
    job = follower.attach(path)
    await follower.refresh()
    line = LiveLine(sys.stderr)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    task = asyncio.current_task()

    def on_sigint() -> None:
        interrupted.set()
        if task is not None:
            task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        await follower.follow(line, args.timeout)
    except asyncio.CancelledError:
        if not interrupted.is_set():
            raise
        line.clear()
        raise CtlError(f"interrupted; the {job.operation or args.command} goes on in vfiod "
                       f"as job {job.path}: follow it with `vfioctl jobs` or `vfioctl "
                       "monitor`", exitcodes.INTERRUPTED) from None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        line.clear()
    if job.result == DONE:
        return job
    if job.result == CANCELLED:
        raise CtlError(job.error or f"job {job.path} was cancelled", exitcodes.FAILED)
    raise CtlError(job.error or job.result, exitcodes.exit_code_for(job.result), job.result)


async def cmd_jobs(client: VfiodClient, args: argparse.Namespace) -> int:
    """``jobs [--json]``: the running jobs, oldest first."""
    (paths,) = await client.call(MANAGER_PATH, MANAGER_IFACE, "Jobs")
    jobs = []
    for path in paths:
        follower = JobFollower(client)
        job = follower.attach(str(path))
        await follower.refresh()
        if job.operation:  # still there
            jobs.append(job)
    if args.json:
        sys.stdout.write(json.dumps([j.to_json() for j in jobs], indent=2) + "\n")
        return exitcodes.OK
    if not jobs:
        print("no running jobs")
        return exitcodes.OK
    for job in jobs:
        print(f"{job.path}  {job.operation} {', '.join(job.devices)}  {job.progress_text()}")
    return exitcodes.OK
