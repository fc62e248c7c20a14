"""The daemon's uevents during an operation: a function being moved is reread once, when
the operation ends; the others at once (vfiod.daemon.runtime.Daemon._apply_changes)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from vfiod.daemon.runtime import Daemon
from vfiod.daemon.watch import Changes

GPU, AUDIO, NIC = "0000:06:00.0", "0000:06:00.1", "0000:07:00.0"


class FakeEngine:
    """What the daemon asks of the engine for one bind of GPU and AUDIO (one group)."""

    host = None
    handover_timeout = 1.0

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = threading.Event()
        self.reread_calls: list[set[str]] = []

    def note_exit(self, pid: int) -> None:
        pass

    def resolve(self, device: str) -> str:
        return device

    def affected(self, op: str, address: str, group: bool) -> list[str]:
        return [GPU, AUDIO]

    def lock_keys(self, op: str, address: str) -> list[str]:
        return ["group:6"]

    def mark_busy(self, addresses: list[str]) -> None:
        pass

    def clear_busy(self, addresses: list[str]) -> None:
        pass

    def run(self, op: str, address: str, **_kwargs: Any) -> list[str]:
        self.running.set()
        assert self.release.wait(10)
        return [GPU, AUDIO]

    def reread(self, addresses: set[str]) -> None:
        self.reread_calls.append(set(addresses))

    def rescan(self) -> None:
        raise AssertionError("no rescan was asked for")

    def wants_vfio(self, address: str) -> bool:
        return False


def test_uevents_of_the_moving_functions_are_reread_once_when_the_operation_ends(
        tmp_path: Path) -> None:
    engine = FakeEngine()

    async def scenario() -> None:
        daemon = Daemon(engine, tmp_path / "vfiod.toml")  # type: ignore[arg-type]
        try:
            bind = asyncio.create_task(daemon.operate("bind", GPU))
            assert await asyncio.to_thread(engine.running.wait, 10)
            await daemon._apply_changes(Changes(refresh={GPU, NIC}))
            await daemon._apply_changes(Changes(refresh={GPU, AUDIO}))  # all deferred
            assert engine.reread_calls == [{NIC}]
            engine.release.set()
            assert await bind == [GPU, AUDIO]
            assert engine.reread_calls == [{NIC}, {GPU, AUDIO}]
            # Once the operation is over, uevents are reread at once.
            await daemon._apply_changes(Changes(refresh={GPU}))
            assert engine.reread_calls == [{NIC}, {GPU, AUDIO}, {GPU}]
        finally:
            engine.release.set()
            daemon.executor.shutdown(wait=True)

    asyncio.run(scenario())
