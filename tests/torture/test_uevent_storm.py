"""udev event storms: thousands of PCI adds and removes, with events lost (ENOBUFS).

Functions are removed and the bus rescanned through the simulated tree's own files (as
`echo 1 > /sys/bus/pci/devices/.../remove` and `/sys/bus/pci/rescan` would), as fast as
the kernel model takes them, while vfiod's uevent queue is kept small (a launcher knob)
so that it overflows. At the end vfiod's model must equal the host: the same functions,
each on the same driver, and one Device object per function.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from integration.helpers import Vfiod, client, knobs, sim_driver

from .report import Sizes, Summary

SCENARIO = "uevent storm"
#: Functions removed in each round: a USB controller, the onboard audio, two GPUs' audio,
#: the chipset's SPSR and sSATA controller.
VICTIMS = ["0000:11:00.0", "0000:00:1b.0", "0000:09:00.1", "0000:06:00.1", "0000:00:11.0",
           "0000:00:11.4"]
#: vfiod's uevent queue in this scenario (the real default is 10,000 events).
QUEUE_LIMIT = 16


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _host(root: Path) -> dict[str, str]:
    devices = root / "sys/bus/pci/devices"
    return {a: sim_driver(root, a) for a in sorted(os.listdir(devices))}


def _model(vfiod: Vfiod) -> tuple[dict[str, str], set[str]]:
    """vfiod's Status (address -> driver) and its Device objects' addresses."""
    rows = {a: row["driver"] for a, row in vfiod.status().items()}

    async def objects() -> set[str]:
        async with client(vfiod.address) as bus:
            from dbus_fast import Message

            reply = await bus.call(Message(
                destination="org.vfiod1", path="/org/vfiod1",
                interface="org.freedesktop.DBus.ObjectManager", member="GetManagedObjects"))
            return {v["org.vfiod1.Device"]["Address"].value for v in reply.body[0].values()
                    if "org.vfiod1.Device" in v}

    return rows, asyncio.run(objects())


def test_a_storm_of_adds_and_removes_with_lost_events_ends_with_the_model_equal_to_the_host(
        make_vfiod: Callable[..., Vfiod], sizes: Sizes, summary: Summary) -> None:
    daemon = make_vfiod().start(**knobs(uevent_queue_limit=QUEUE_LIMIT))
    root = daemon.sim_root
    devices = root / "sys/bus/pci/devices"
    events = rounds = 0
    has_driver = [a for a in VICTIMS if (devices / a / "driver").exists()]
    started = time.monotonic()
    while events < sizes.storm_events:
        for address in VICTIMS:
            _write(devices / address / "remove", "1")
        assert _wait(lambda: not any((devices / a).exists() for a in VICTIMS), 30)
        _write(root / "sys/bus/pci/rescan", "1")
        assert _wait(lambda: all((devices / a).exists() for a in VICTIMS)
                     and all((devices / a / "driver").exists() for a in has_driver), 30)
        events += 2 * len(VICTIMS)  # a remove and an add of each
        rounds += 1
    storm = time.monotonic() - started
    host = _host(root)
    settled = _wait(lambda: _model(daemon) == (host, set(host)), 60)
    settle = time.monotonic() - started - storm
    rows, objects = _model(daemon)
    log = daemon.log()
    overflows = log.count("uevents were lost")
    differ = sorted(a for a in host.keys() | rows.keys() if host.get(a) != rows.get(a))
    differ += sorted(objects ^ set(host))

    summary.add(SCENARIO, "PCI adds and removes", events)
    summary.add(SCENARIO, f"storm rounds (remove {len(VICTIMS)}, rescan)", rounds)
    summary.add(SCENARIO, "storm seconds", storm)
    summary.add(SCENARIO, f"queue overflows (ENOBUFS, queue of {QUEUE_LIMIT})", overflows)
    summary.add(SCENARIO, "seconds until vfiod's model equalled the host", settle)
    summary.add(SCENARIO, "functions where vfiod's model and the host differ", len(differ),
                must_be_zero=True)
    summary.add(SCENARIO, "tracebacks in the daemon's log", log.count("Traceback"),
                must_be_zero=True)
    assert settled, differ
    assert differ == []
    assert "Traceback" not in log, log[-3000:]
    assert daemon.proc is not None and daemon.proc.poll() is None
