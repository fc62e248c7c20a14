"""A vfiod running inside the test's own process, on the private bus.

For tests that must reach into the running daemon (switch its cached GetManagedObjects
off, hold a weak reference to one of its objects) while a real client talks to it over
the bus. Everything else uses the ``vfiod`` fixture's separate process.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from vfiod.config import load_config
from vfiod.daemon.runtime import Daemon
from vfiod.engine import Engine
from vfiod.privatebus import PrivateBus
from vfiod.sim import SimHost

CONFIG = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\n'


@asynccontextmanager
async def vfiod_in_process(bus: PrivateBus, tmp_path: Path,
                           config: str = CONFIG) -> AsyncIterator[Daemon]:
    """vfiod on a fresh simulated seed-x99 (sim tree in tmp_path/sim), owning org.vfiod1;
    stopped, and its machine removed, afterwards."""
    config_path = tmp_path / "vfiod.toml"
    config_path.write_text(config)
    host = await asyncio.to_thread(SimHost, "seed-x99", tmp_path / "sim")
    try:
        engine = Engine(host, tmp_path / "state", load_config(config_path))
        daemon = Daemon(engine, config_path, bus_address=bus.address, simulated=True)
        try:
            await daemon.start()
            yield daemon
        finally:
            await daemon.shutdown()
    finally:
        await asyncio.to_thread(host.close)
        gc.unfreeze()  # start-up froze everything alive in this (test) process
