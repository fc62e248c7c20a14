"""vfiod.daemon.jobs without a bus: a job's object, its end, its removal, Cancel's answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vfiod.daemon.jobs import Job, Jobs
from vfiod.errors import Failed, InUse, InvalidArgument


class FakeBus:
    """What Jobs asks of the bus, recorded."""

    connected = True

    def __init__(self) -> None:
        self.exported: dict[str, Any] = {}
        self.signals: list[tuple[str, str, list[Any]]] = []
        self.changes: list[tuple[str, dict[str, Any]]] = []

    def export(self, path: str, interface: Any) -> None:
        self.exported[path] = interface

    def unexport(self, path: str) -> None:
        del self.exported[path]

    def send_signal(self, path: str, interface: str, member: str, signature: str,
                    body: list[Any]) -> None:
        self.signals.append((path, member, body))

    def send_properties_changed(self, path: str, interface: str, changed: dict[str, Any]
                                ) -> None:
        self.changes.append((path, {k: v.value for k, v in changed.items()}))


def test_a_done_job_sends_job_finished_and_its_object_goes_after_the_linger() -> None:
    bus = FakeBus()

    async def scenario() -> tuple[list[str], bool, list[str]]:
        jobs = Jobs(lambda: bus, linger=0.1)  # type: ignore[arg-type,return-value]

        async def run(job: Job) -> list[str]:
            return ["0000:06:00.0", "0000:06:00.1"]

        job = jobs.start("bind", ["0000:06:00.0", "0000:06:00.1"], run)
        assert await job.outcome == ["0000:06:00.0", "0000:06:00.1"]
        after_end = list(bus.exported)
        await asyncio.sleep(0.2)
        return after_end, job.path in bus.exported, jobs.running()

    after_end, still_there, running = asyncio.run(scenario())
    assert after_end == ["/org/vfiod1/job/1"]
    assert not still_there and running == []
    assert bus.signals == [("/org/vfiod1", "JobFinished", ["/org/vfiod1/job/1", "done",
                                                          ["0000:06:00.0", "0000:06:00.1"],
                                                          ""])]
    assert bus.changes[-1][1]["Result"] == "done"


def test_a_failed_job_finishes_with_the_error_name_and_raises_for_the_sync_caller() -> None:
    bus = FakeBus()

    async def scenario() -> None:
        jobs = Jobs(lambda: bus)  # type: ignore[arg-type,return-value]

        async def run(job: Job) -> list[str]:
            raise InUse("0000:06:00.0: refusing to bind it: held")

        job = jobs.start("bind", ["0000:06:00.0"], run)
        with pytest.raises(InUse):
            await job.outcome

    asyncio.run(scenario())
    assert bus.signals[0][2][1:] == ["org.vfiod1.Error.InUse", ["0000:06:00.0"],
                                     "0000:06:00.0: refusing to bind it: held"]


def test_cancel_of_a_queued_job_stops_it_at_once() -> None:
    bus = FakeBus()

    async def scenario() -> str:
        jobs = Jobs(lambda: bus)  # type: ignore[arg-type,return-value]
        never = asyncio.Event()

        async def run(job: Job) -> list[str]:
            await never.wait()  # queued behind another operation, for ever
            return []

        job = jobs.start("unbind", ["0000:06:00.0"], run)
        await asyncio.sleep(0)
        jobs.cancel(job.path)
        with pytest.raises(Failed, match="cancelled before it started"):
            await job.outcome
        return job.result

    assert asyncio.run(scenario()) == "cancelled"


def test_cancel_names_what_it_cannot_stop() -> None:
    bus = FakeBus()

    async def scenario() -> list[str]:
        jobs = Jobs(lambda: bus)  # type: ignore[arg-type,return-value]
        messages = []
        with pytest.raises(InvalidArgument) as unknown:
            jobs.cancel("/org/vfiod1/job/9")
        messages.append(str(unknown.value))

        async def run(job: Job) -> str:
            return "flr"

        job = jobs.start("reset", ["0000:00:1b.0"], run)
        await job.outcome
        with pytest.raises(Failed) as finished:
            jobs.cancel(job.path)
        messages.append(str(finished.value))
        return messages

    assert asyncio.run(scenario()) == [
        "/org/vfiod1/job/9: no such job (finished jobs go 30 s after they end)",
        "/org/vfiod1/job/1: the job has finished already (done)"]
