#!/usr/bin/env python3
"""The applet's idle CPU: what vfiod-applet spends while nothing happens.

    .venv/bin/python benchmarks/applet_idle.py [--seconds 30] [--json]

Starts vfiod on the simulated seed-x99 (private system bus), a private session bus
with a stand-in StatusNotifierWatcher, and the real ``vfiod-applet``; waits until the
applet has registered and shown its menu, then reads the CPU time of all the applet's
threads (``/proc/PID/task/*/schedstat``, nanoseconds) at the start and the end of the
idle period. The applet follows vfiod by signals only, so the figure is what its event
loop costs doing nothing (the target: under 10 ms over 30 s). Then it restarts vfiod
and times the menu's return after vfiod owns its name again. It measures and prints;
it asserts nothing. Every process it starts is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dbus_fast import Message  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

from tests.integration.applet_helpers import TrayHost, applet, session_bus, until  # noqa: E402
from vfiod.privatebus import PrivateBus, start_vfiod, stop_vfiod  # noqa: E402

CONFIG = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\n'


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of *pid* so far, in nanoseconds."""
    return sum(int((task / "schedstat").read_text().split()[0])
               for task in Path(f"/proc/{pid}/task").iterdir())


async def measure(seconds: float) -> dict[str, float]:
    """Idle CPU of the applet over *seconds*, once it is up."""
    with tempfile.TemporaryDirectory(prefix="vfiod-applet-bench-") as tmp_name, \
            PrivateBus() as system, session_bus() as session:
        tmp = Path(tmp_name)
        (tmp / "vfiod.toml").write_text(CONFIG)
        (tmp / "applet.toml").write_text("")
        daemon = start_vfiod(system, tmp / "sim", "seed-x99", tmp / "state",
                             tmp / "vfiod.toml", log=tmp / "vfiod.log")
        bus = await MessageBus(bus_address=session).connect()
        try:
            tray = await TrayHost(bus).start()
            with applet(system.address, session, tmp / "applet.toml") as proc:
                started = time.monotonic()
                await until(lambda: tray.watcher.registered, 30, "registration")
                await until(lambda: tray.seen("LayoutUpdated"), 30, "the menu")
                ready = time.monotonic() - started
                await asyncio.sleep(2)  # let start-up work (imports, GC) settle
                before, t0 = cpu_ns(proc.pid), time.monotonic()
                await asyncio.sleep(seconds)
                after, t1 = cpu_ns(proc.pid), time.monotonic()
                signals = len(tray.signals)
                recovery = await restart_recovery(system, daemon, tray, tmp)
                daemon = recovery.pop("daemon")  # type: ignore[assignment]
        finally:
            bus.disconnect()
            stop_vfiod(daemon)
    return {"idle_seconds": round(t1 - t0, 2), "idle_cpu_ms": round((after - before) / 1e6, 3),
            "ready_seconds": round(ready, 3), "start_cpu_ms": round(before / 1e6, 1),
            "tray_signals_total": signals, **recovery}


async def restart_recovery(system: PrivateBus, daemon: Any, tray: TrayHost,
                           tmp: Path) -> dict[str, Any]:
    """Stop vfiod, wait for the applet's "not running" menu, start vfiod again: the
    time from vfiod owning its name again to the applet's next LayoutUpdated."""
    watch = await MessageBus(bus_address=system.address).connect()
    owned: list[float] = []
    try:
        await watch.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=["type='signal',member='NameOwnerChanged',arg0='org.vfiod1'"]))
        watch.add_message_handler(lambda m: owned.append(time.monotonic())
                                  if m.member == "NameOwnerChanged" and m.body[2] else None)
        layouts = tray.seen("LayoutUpdated")
        await asyncio.get_running_loop().run_in_executor(None, stop_vfiod, daemon)
        await until(lambda: tray.seen("LayoutUpdated") > layouts, 30, "not running")
        layouts = tray.seen("LayoutUpdated")
        daemon = start_vfiod(system, tmp / "sim2", "seed-x99", tmp / "state",
                             tmp / "vfiod.toml", log=tmp / "vfiod2.log")
        await until(lambda: tray.seen("LayoutUpdated") > layouts, 30, "the menu back")
        back = time.monotonic()
        await until(lambda: owned, 5, "NameOwnerChanged")
    finally:
        watch.disconnect()
    return {"daemon": daemon, "recovery_ms": round((back - owned[-1]) * 1000, 1)}


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args.seconds))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"vfiod-applet: registered and showing its menu {result['ready_seconds']} s "
              f"after start; idle CPU {result['idle_cpu_ms']} ms over "
              f"{result['idle_seconds']} s; menu back {result['recovery_ms']} ms after "
              "vfiod's restart")
    return 0


if __name__ == "__main__":
    sys.exit(main())
