"""Jobs: every Bind, Unbind and Reset as an object a client can follow (systemd's pattern).

A job is ``/org/vfiod1/job/N`` with interface org.vfiod1.Job, in the ObjectManager from
its start. Its Phase and WaitingFor come from the engine's progress hook
(vfiod.engine.progress), which runs on the operation's worker thread: the values are
noted under a lock there and published from the loop (call_soon_threadsafe), quick
changes coalesced into one PropertiesChanged. When it ends, its Result and Error are
set, Manager.JobFinished is sent, and the object stays readable for JOB_LINGER seconds
(so that a client that learns of the end late can still read the outcome), then goes
(InterfacesRemoved). Jobs() lists the running ones.

A job belongs to the daemon, not to the client that started it: a client that
disconnects (or whose synchronous call times out) leaves it running.

Cancel stops a job at its next safe step (the engine rolls back what it did, as for a
failure); a job queued behind another on the same IOMMU group stops at once; a job
whose kernel write is under way cannot be cancelled (the kernel cannot interrupt it),
and Cancel says so.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from vfiod.contract import JOB_INTERFACE, JOB_PATH_PREFIX, MANAGER_INTERFACE, MANAGER_PATH, job_path
from vfiod.daemon.bus import ObjectManagerBus
from vfiod.daemon.log import log
from vfiod.daemon.service import JOB_FINISHED_SIGNATURE, JobInterface, one_line
from vfiod.errors import Failed, InvalidArgument, VfiodError

#: How long a finished job's object stays on the bus, in seconds.
JOB_LINGER = 30.0
#: Result of a job that did what it was asked.
DONE = "done"
#: Result of a job stopped by Cancel.
CANCELLED = "cancelled"


class Job:
    """One operation's state, as its object shows it."""

    def __init__(self, number: int, operation: str, devices: list[str]) -> None:
        self.number = number
        self.path = job_path(number)
        self.operation = operation
        self.devices = list(devices)
        self.started_at = time.time_ns() // 1000  # µs since the epoch
        self.phase = "queued"
        self.waiting_for = ""
        self.result = ""
        self.error = ""
        self.method = ""
        #: A kernel write of this job is under way (Cancel is refused then).
        self.in_kernel = False
        #: Cancel was asked; the engine stops at its next safe step.
        self.cancel_requested = False
        #: False until the job holds its groups' locks and runs in the engine.
        self.running = False
        self.task: asyncio.Task[Any] | None = None
        self.outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._lock = threading.Lock()

    @property
    def finished(self) -> bool:
        """True once Result is set."""
        return bool(self.result)

    def values(self) -> dict[str, Any]:
        """The object's property values, by D-Bus name."""
        with self._lock:
            return {"Operation": self.operation, "Devices": list(self.devices),
                    "Phase": self.phase, "StartedAt": self.started_at,
                    "WaitingFor": self.waiting_for, "Result": self.result,
                    "Error": self.error, "Method": self.method}

    def note(self, phase: str, waiting_for: str = "", *, in_kernel: bool = False) -> None:
        """The engine's progress (any thread): the step, what it waits for."""
        with self._lock:
            self.phase = phase or self.phase
            self.waiting_for = waiting_for
            self.in_kernel = in_kernel

    def cancelled(self) -> bool:
        """The engine's check at each safe step."""
        return self.cancel_requested

    def kernel_write(self) -> str:
        """The kernel write under way ("" when none): Cancel cannot stop the job now."""
        with self._lock:
            return self.waiting_for.removeprefix("the kernel: ") if self.in_kernel else ""

    def end(self, result: str, error: str, devices: list[str] | None = None,
            method: str = "") -> None:
        """Set the outcome (JobFinished's values)."""
        with self._lock:
            self.result, self.error, self.method = result, error, method
            if devices is not None:
                self.devices = list(devices)
            self.waiting_for = ""
            self.in_kernel = False
            self.phase = {DONE: "done", CANCELLED: "cancelled"}.get(result, "failed")


class Jobs:
    """The daemon's jobs: numbering, their objects, progress, Cancel and the end."""

    def __init__(self, bus: Callable[[], ObjectManagerBus | None],
                 linger: float = JOB_LINGER) -> None:
        self._bus = bus
        self.linger = linger
        self._next = 1
        self._jobs: dict[str, Job] = {}
        self._interfaces: dict[str, JobInterface] = {}
        self._publishing: set[str] = set()

    # -- life of a job ------------------------------------------------------------------
    def start(self, operation: str, devices: list[str],
              run: Callable[[Job], Awaitable[Any]]) -> Job:
        """Create a job, export its object and run ``run(job)`` as a task of its own."""
        job = Job(self._next, operation, devices)
        self._next += 1
        self._jobs[job.path] = job
        interface = JobInterface(job.values())
        self._interfaces[job.path] = interface
        bus = self._bus()
        if bus is not None:
            bus.export(job.path, interface)
        log.info("job %d: %s %s started", job.number, operation, ", ".join(devices))
        job.task = asyncio.get_running_loop().create_task(self._run(job, run),
                                                          name=f"job {job.number}")
        return job

    async def _run(self, job: Job, run: Callable[[Job], Awaitable[Any]]) -> None:
        try:
            value = await run(job)
        except asyncio.CancelledError:
            # Cancelled while queued (nothing was done), or the daemon is going away.
            self._end(job, CANCELLED, "cancelled before it started: nothing was changed",
                      Failed(f"{job.operation} cancelled before it started: nothing was "
                             "changed"))
            return
        except VfiodError as err:
            result = CANCELLED if job.cancel_requested else err.dbus_name
            self._end(job, result, one_line(str(err)), err)
            return
        except Exception:  # a bug: logged with its traceback, reported as Failed
            log.exception("job %d failed", job.number)
            self._end(job, Failed.dbus_name, "internal error in vfiod (details are in its "
                      "log)", Failed(f"{job.operation} failed: internal error in vfiod "
                                     "(details are in its log)"))
            return
        if isinstance(value, str):  # a reset: the method that worked
            self._end(job, DONE, "", None, value, devices=job.devices[:1], method=value)
        else:  # a bind or unbind: the functions that moved
            self._end(job, DONE, "", None, value, devices=list(value))

    def _end(self, job: Job, result: str, error: str, exc: BaseException | None,
             value: Any = None, *, devices: list[str] | None = None, method: str = "") -> None:
        """Set the outcome, publish it, send JobFinished, remove the object later."""
        job.end(result, error, devices, method)
        self._publish(job.path)
        bus = self._bus()
        if bus is not None:
            bus.send_signal(MANAGER_PATH, MANAGER_INTERFACE, "JobFinished",
                            JOB_FINISHED_SIGNATURE, [job.path, result, list(job.devices), error])
        log.info("job %d: %s %s: %s%s", job.number, job.operation, ", ".join(job.devices),
                 result, f": {error}" if error else "")
        if not job.outcome.done():
            if exc is not None:
                job.outcome.set_exception(exc)
                job.outcome.exception()  # nobody may await it: no "never retrieved" warning
            else:
                job.outcome.set_result(value)
        asyncio.get_running_loop().call_later(self.linger, self._remove, job.path)

    def _remove(self, path: str) -> None:
        self._jobs.pop(path, None)
        self._interfaces.pop(path, None)
        bus = self._bus()
        if bus is not None and bus.connected:
            bus.unexport(path)

    # -- progress from the engine's thread --------------------------------------------
    def progress(self, job: Job, loop: asyncio.AbstractEventLoop) -> Callable[..., None]:
        """The engine's progress hook for *job*: note, then publish from the loop."""
        def report(phase: str, waiting_for: str = "", *, in_kernel: bool = False) -> None:
            job.note(phase, waiting_for, in_kernel=in_kernel)
            loop.call_soon_threadsafe(self._publish, job.path)
        return report

    def set_phase(self, job: Job, phase: str, waiting_for: str = "") -> None:
        """A step of the daemon's own (on the loop): waiting for the group's lock."""
        job.note(phase, waiting_for)
        self._publish(job.path)

    def _publish(self, path: str) -> None:
        """PropertiesChanged with what changed since the last one (on the loop)."""
        job, interface = self._jobs.get(path), self._interfaces.get(path)
        if job is None or interface is None:
            return
        changed = interface.update(job.values())
        bus = self._bus()
        if changed and bus is not None:
            bus.send_properties_changed(path, JOB_INTERFACE, changed)

    # -- what clients ask ---------------------------------------------------------------
    def running(self) -> list[str]:
        """The paths of the jobs not finished yet, oldest first."""
        return [path for path, job in self._jobs.items() if not job.finished]

    def get(self, path: str) -> Job | None:
        """The job at *path* (running, or finished and still lingering)."""
        return self._jobs.get(path)

    def cancel(self, path: str) -> None:
        """Stop a running job at its next safe step; the error says why it cannot."""
        job = self._jobs.get(path)
        if job is None or not path.startswith(JOB_PATH_PREFIX):
            raise InvalidArgument(f"{path}: no such job (finished jobs go "
                                  f"{self.linger:g} s after they end)")
        if job.finished:
            raise Failed(f"{path}: the job has finished already ({job.result})")
        write = job.kernel_write()
        if write:
            raise Failed(f"{path}: cannot cancel now: it is blocked in a kernel write, which "
                         f"cannot be interrupted ({write}); it goes on when the kernel "
                         "returns, and Cancel can stop it at the next step")
        job.cancel_requested = True
        log.info("job %d: cancel requested (%s)", job.number, job.phase)
        if not job.running and job.task is not None:
            job.task.cancel()  # queued behind another operation: nothing done yet
