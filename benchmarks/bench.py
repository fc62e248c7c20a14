#!/usr/bin/env python3
"""vfiod benchmarks: print how long the project's pieces take on this machine.

    .venv/bin/python benchmarks/bench.py [--json] [--quick] [--only SECTIONS]

Figures (see benchmarks/README.md for what each one means): simulated host build,
discovery scan and Engine.status() on the scale machine, in-process bind+unbind, vfiod
start until it owns org.vfiod1, D-Bus round trips (Status, GetManagedObjects, Bind and
Unbind), `vfioctl status` and `busctl call` wall time, vfiod's RSS, and the machine.

It asserts nothing about speed: it measures and prints. Every process it starts (the
private dbus-daemon, each vfiod, each client) is stopped by its pid on the way out,
also on an error, Ctrl-C or SIGTERM. Nothing here touches this machine's /sys: vfiod
always runs ``--simulate`` and the engine runs on a SimHost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Benchmark this checkout, whatever is installed in the interpreter.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dbus_fast import Message, MessageType, Variant  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

from vfiod.discovery import scan  # noqa: E402
from vfiod.engine import Engine  # noqa: E402
from vfiod.privatebus import PrivateBus, start_vfiod, stop_vfiod  # noqa: E402
from vfiod.sim import SimHost  # noqa: E402
from vfiod.sim.host import scratch_dir  # noqa: E402

BUS_NAME = "org.vfiod1"
MANAGER = "/org/vfiod1"
MANAGER_IFACE = "org.vfiod1.Manager"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"
#: The guest's GPU on seed-x99; its HDMI audio (06:00.1) shares IOMMU group 31.
GPU = "0000:06:00.0"
GPU_GROUP = ["0000:06:00.0", "0000:06:00.1"]


# -- repetition counts ------------------------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """How often each figure is measured (N in the table)."""

    seed_build: int = 10
    scale_build: int = 3
    scale_scan: int = 3
    scale_status_cold: int = 3
    scale_status_warm: int = 10
    engine_bind: int = 20
    seed_start: int = 3
    scale_start: int = 2
    seed_status: int = 200
    scale_status: int = 20
    scale_gmo: int = 5
    dbus_bind: int = 10
    vfioctl: int = 10
    busctl: int = 10


QUICK = Counts(seed_build=3, scale_build=1, scale_scan=1, scale_status_cold=1,
               scale_status_warm=3, engine_bind=5, seed_start=1, scale_start=1,
               seed_status=50, scale_status=5, scale_gmo=2, dbus_bind=3, vfioctl=3,
               busctl=3)

SECTIONS = ("sim", "engine", "daemon-seed", "daemon-scale")


# -- results ----------------------------------------------------------------------------

@dataclass
class Figure:
    """One line of the table: a repeated measurement (seconds) or a single quantity."""

    section: str
    name: str
    samples: list[float] = field(default_factory=list)
    unit: str = "s"  # samples are seconds; a single quantity has its own unit
    value: float | None = None  # a single quantity (bytes, MB, count) instead of samples
    note: str = ""

    @property
    def n(self) -> int:
        """How many samples (1 for a single quantity)."""
        return len(self.samples) if self.value is None else 1

    @property
    def median(self) -> float | None:
        """The median sample in seconds (None for a single quantity)."""
        return statistics.median(self.samples) if self.samples else None

    @property
    def p90(self) -> float | None:
        """The 90th percentile (nearest rank) in seconds; None below 2 samples."""
        if len(self.samples) < 2:
            return None
        ordered = sorted(self.samples)
        rank = max(1, -(-9 * len(ordered) // 10))  # ceil(0.9 * n)
        return ordered[rank - 1]

    def to_json(self) -> dict[str, Any]:
        """The figure for --json: raw samples in seconds and the summary."""
        data = asdict(self)
        data.update(n=self.n, median_s=self.median, p90_s=self.p90)
        return data


class Results:
    """The figures in the order measured, plus facts about the machine."""

    def __init__(self) -> None:
        self.machine: dict[str, Any] = {}
        self.figures: list[Figure] = []

    def timed(self, section: str, name: str, samples: list[float], note: str = "") -> Figure:
        """Record a repeated time measurement (samples in seconds)."""
        figure = Figure(section, name, list(samples), note=note)
        self.figures.append(figure)
        return figure

    def quantity(self, section: str, name: str, value: float, unit: str,
                 note: str = "") -> Figure:
        """Record a single quantity (a size, a count, an RSS)."""
        figure = Figure(section, name, [], unit=unit, value=value, note=note)
        self.figures.append(figure)
        return figure


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    if ms >= 1000:
        return f"{seconds:.2f} s"
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def _fmt_quantity(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value:,.0f} B" if value < 10240 else f"{value / 1024:,.1f} KiB"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}".strip()


def render_table(results: Results) -> str:
    """The plain-text table: machine facts, then one line per figure."""
    lines = ["vfiod benchmarks"]
    for key, value in results.machine.items():
        lines.append(f"  {key + ':':<18} {value}")
    rows = [("figure", "N", "median", "p90", "note")]
    section = None
    breaks: list[int] = []
    for f in results.figures:
        if f.section != section:
            section = f.section
            breaks.append(len(rows))
        if f.value is not None:
            rows.append((f.name, "1", _fmt_quantity(f.value, f.unit), "", f.note))
        else:
            rows.append((f.name, str(f.n), _fmt_time(f.median), _fmt_time(f.p90), f.note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    width = sum(widths) + 8 + max(len(r[4]) for r in rows)
    out = [f"{rows[0][0]:<{widths[0]}}  {rows[0][1]:>{widths[1]}}  {rows[0][2]:>{widths[2]}}  "
           f"{rows[0][3]:>{widths[3]}}  {rows[0][4]}"]
    titles = iter(dict.fromkeys(f.section for f in results.figures))
    for i, row in enumerate(rows[1:], start=1):
        if i in breaks:
            out.append(f"-- {next(titles)} ".ljust(width, "-"))
        out.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
                   f"{row[3]:>{widths[3]}}  {row[4]}".rstrip())
    lines.append("")
    lines.extend(out)
    return "\n".join(lines)


# -- helpers ----------------------------------------------------------------------------

def machine_facts() -> dict[str, Any]:
    """CPU count, Python, kernel and load at start (figures on a busy machine are inflated)."""
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load average": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min, at start)",
        "sim trees in": scratch_dir() or tempfile.gettempdir(),
        "state dirs in": tempfile.gettempdir(),
    }


def repeat(n: int, fn: Callable[[], object]) -> list[float]:
    """Run *fn* n times; the wall time of each run in seconds."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


async def repeat_async(n: int, fn: Callable[[], Awaitable[object]]) -> list[float]:
    """Await *fn()* n times; the wall time of each in seconds."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return samples


def vm_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB, from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def wire_size(msg: Message) -> int:
    """The size of a message as sent on the bus (header and body)."""
    return len(msg._marshall(False))  # dbus-fast's own serialiser; no public equivalent


def check_reply(reply: Message, what: str) -> Message:
    """The reply, or a clear error when vfiod answered with one (a broken setup)."""
    if reply.message_type is not MessageType.METHOD_RETURN:
        raise RuntimeError(f"{what}: vfiod replied {reply.error_name}: {reply.body}")
    return reply


class BenchError(RuntimeError):
    """The benchmark could not measure something (vfiod misbehaved, a tool is missing)."""


@contextmanager
def scratch(name: str, *, disk: bool = False) -> Iterator[Path]:
    """A temporary directory, removed afterwards.

    Simulated trees go to tmpfs when there is one (sysfs lives in memory too); state
    directories (*disk*) go to the ordinary temp dir, on disk like /var/lib/vfiod, so
    that the engine's fsyncs cost what they cost on a real host.
    """
    where = None if disk else scratch_dir()
    path = Path(tempfile.mkdtemp(prefix=f"vfiod-bench-{name}-", dir=where))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class NameWatch(threading.Thread):
    """Notes the moment org.vfiod1 gets an owner, from the bus's NameOwnerChanged signal.

    start_vfiod returns at the daemon's READY=1, a little after the name is owned; the
    signal gives the moment itself. The thread has its own client and event loop and ends on its own
    (the name owned, stop(), or 300 s).
    """

    def __init__(self, address: str) -> None:
        super().__init__(name="name-watch", daemon=True)
        self.address = address
        self.owned_at: float | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._watch())
        except BaseException as exc:  # reported by the caller, which falls back
            self.error = exc
        finally:
            self.ready.set()

    def stop(self) -> None:
        """Make the thread end soon, and wait for it."""
        self._halt.set()
        self.join(5)

    async def _watch(self) -> None:
        bus = await MessageBus(bus_address=self.address).connect()
        try:
            owned = asyncio.Event()

            def on_message(msg: Message) -> None:
                if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                        and msg.body[0] == BUS_NAME and msg.body[2]):
                    self.owned_at = time.perf_counter()
                    owned.set()

            bus.add_message_handler(on_message)
            check_reply(await bus.call(Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                body=[f"type='signal',sender='org.freedesktop.DBus',"
                      f"member='NameOwnerChanged',arg0='{BUS_NAME}'"])), "AddMatch")
            self.ready.set()
            deadline = time.monotonic() + 300
            while not owned.is_set() and not self._halt.is_set() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(owned.wait(), 0.1)
                except TimeoutError:
                    pass
        finally:
            bus.disconnect()


class Daemons:
    """Starts vfiod on the private bus and stops every one it started."""

    def __init__(self, bus: PrivateBus, stack: ExitStack) -> None:
        self.bus = bus
        self.stack = stack

    def start(self, profile: str) -> tuple[subprocess.Popen[bytes], float]:
        """A vfiod on a fresh simulated *profile*; (process, seconds until it owned the name)."""
        work = self.stack.enter_context(scratch(profile))
        state = self.stack.enter_context(scratch(f"{profile}-state", disk=True))
        config = work / "vfiod.toml"
        config.write_text("")  # never this machine's /etc/vfiod
        watch = NameWatch(self.bus.address)
        watch.start()
        try:
            watch.ready.wait(10)
            t0 = time.perf_counter()
            # start_vfiod stops the process itself when it fails to come up.
            proc = start_vfiod(self.bus, work / "sim", profile, state, config,
                               log=work / "vfiod.log", timeout=240)
            returned = time.perf_counter()
            self.stack.callback(stop_vfiod, proc)
        finally:
            watch.stop()
        elapsed = (watch.owned_at if watch.owned_at is not None else returned) - t0
        return proc, elapsed

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one vfiod now (stopping it again on the way out is harmless)."""
        code = stop_vfiod(proc)
        if code not in (0, -signal.SIGTERM):
            print(f"note: vfiod {proc.pid} exited with status {code}", file=sys.stderr)


# -- the figures ------------------------------------------------------------------------

def bench_sim(results: Results, counts: Counts) -> None:
    """1 and 2: build the simulated hosts; scan and Engine.status() over the scale one."""
    section = "simulated host"

    # SimHost() builds the tree in __init__; close() (removing it) is timed apart.
    samples: list[float] = []
    closes: list[float] = []
    count = 0
    for _ in range(counts.seed_build):
        t0 = time.perf_counter()
        host = SimHost(profile="seed-x99")
        samples.append(time.perf_counter() - t0)
        count = len(host.machine.devices)
        t1 = time.perf_counter()
        host.close()
        closes.append(time.perf_counter() - t1)
    results.timed(section, "build seed-x99 (SimHost())", samples, f"{count} functions")
    results.timed(section, "close seed-x99 (remove tree)", closes)

    samples, closes = [], []
    host: SimHost | None = None
    try:
        for i in range(counts.scale_build):
            t0 = time.perf_counter()
            host = SimHost(profile="scale")
            samples.append(time.perf_counter() - t0)
            count = len(host.machine.devices)
            if i < counts.scale_build - 1:
                t1 = time.perf_counter()
                host.close()
                closes.append(time.perf_counter() - t1)
                host = None
        results.timed(section, "build scale (SimHost())", samples, f"{count} functions")

        assert host is not None
        found: dict[str, Any] = {}

        def do_scan() -> None:
            found.clear()
            found.update(scan(host))

        results.timed(section, "discovery.scan(scale)", repeat(counts.scale_scan, do_scan),
                      f"{len(found)} functions found")
        if len(found) != count:
            raise BenchError(f"scan found {len(found)} functions, the profile has {count}")

        state_dirs: list[Path] = []
        engines: list[Engine] = []

        def cold_status() -> None:
            # A new Engine: its first status() scans devices, holders and usages.
            state = Path(tempfile.mkdtemp(prefix="vfiod-bench-state-"))  # on disk
            state_dirs.append(state)
            engine = Engine(host, state)
            engines[:] = [engine]
            engine.status()

        try:
            results.timed(section, "Engine.status() scale, first call",
                          repeat(counts.scale_status_cold, cold_status),
                          "new Engine: includes the full scan")
            rows = engines[0].status()
            results.timed(section, "Engine.status() scale, snapshot",
                          repeat(counts.scale_status_warm, engines[0].status),
                          f"{len(rows)} rows from the cached snapshot")
        finally:
            for state in state_dirs:
                shutil.rmtree(state, ignore_errors=True)
    finally:
        if host is not None:
            t1 = time.perf_counter()
            host.close()
            closes.append(time.perf_counter() - t1)
    if closes:
        results.timed(section, "close scale (remove tree)", closes)


def bench_engine(results: Results, counts: Counts) -> None:
    """3: the engine's bind+unbind of the guest GPU and its audio, in-process on seed-x99."""
    section = "engine (in-process, seed-x99)"
    with SimHost(profile="seed-x99") as host, scratch("engine", disk=True) as state:
        engine = Engine(host, state)
        engine.devices()  # the first scan is not part of bind
        binds, unbinds, pairs = [], [], []
        # One more pair than counted: the first one (it may load vfio-pci) is shown apart.
        for _ in range(counts.engine_bind + 1):
            t0 = time.perf_counter()
            moved = engine.bind(GPU)
            t1 = time.perf_counter()
            back = engine.unbind(GPU)
            t2 = time.perf_counter()
            if sorted(moved) != GPU_GROUP or sorted(back) != GPU_GROUP:
                raise BenchError(f"bind moved {moved}, unbind {back}; expected {GPU_GROUP}")
            binds.append(t1 - t0)
            unbinds.append(t2 - t1)
            pairs.append(t2 - t0)
        writes = len(host.write_log) / (counts.engine_bind + 1)
    results.timed(section, "first bind+unbind", pairs[:1], "a fresh Engine's first pair")
    results.timed(section, f"Engine.bind({GPU[5:]})", binds[1:], "GPU + HDMI audio to vfio-pci")
    results.timed(section, f"Engine.unbind({GPU[5:]})", unbinds[1:],
                  "back to nvidia/snd_hda_intel")
    results.timed(section, "bind+unbind", pairs[1:], f"{writes:g} sysfs writes per pair")


async def _dbus_seed(address: str, results: Results, counts: Counts, section: str) -> None:
    async with client(address) as bus:
        status = Message(destination=BUS_NAME, path=MANAGER, interface=MANAGER_IFACE,
                         member="Status")
        reply = check_reply(await bus.call(status), "Status")
        rows = len(reply.body[0])
        await repeat_async(3, lambda: bus.call(status))  # warm-up, not counted
        samples = await repeat_async(counts.seed_status, lambda: bus.call(status))
        results.timed(section, "D-Bus Status round trip", samples,
                      f"dbus-fast client, {rows} rows")
        results.quantity(section, "Status reply size", wire_size(reply), "bytes",
                         "whole message as sent on the bus")

        def op(member: str) -> Message:
            return Message(destination=BUS_NAME, path=MANAGER, interface=MANAGER_IFACE,
                           member=member, signature="sa{sv}",
                           body=[GPU, {"group": Variant("b", True)}])

        binds, unbinds, pairs = [], [], []
        for _ in range(counts.dbus_bind + 1):  # the first pair is shown apart
            t0 = time.perf_counter()
            moved = check_reply(await bus.call(op("Bind")), "Bind").body[0]
            t1 = time.perf_counter()
            back = check_reply(await bus.call(op("Unbind")), "Unbind").body[0]
            t2 = time.perf_counter()
            if sorted(moved) != GPU_GROUP or sorted(back) != GPU_GROUP:
                raise BenchError(f"Bind moved {moved}, Unbind {back}; expected {GPU_GROUP}")
            binds.append(t1 - t0)
            unbinds.append(t2 - t1)
            pairs.append(t2 - t0)
        results.timed(section, "D-Bus first Bind+Unbind", pairs[:1],
                      "the daemon's first pair")
        results.timed(section, "D-Bus Bind round trip", binds[1:], f"{GPU[5:]} and its audio")
        results.timed(section, "D-Bus Unbind round trip", unbinds[1:])
        results.timed(section, "D-Bus Bind+Unbind", pairs[1:], "as root (no polkit call)")


async def _dbus_scale(address: str, results: Results, counts: Counts, section: str) -> None:
    async with client(address) as bus:
        status = Message(destination=BUS_NAME, path=MANAGER, interface=MANAGER_IFACE,
                         member="Status")
        reply = check_reply(await bus.call(status), "Status")
        rows = len(reply.body[0])
        samples = await repeat_async(counts.scale_status, lambda: bus.call(status))
        results.timed(section, "D-Bus Status round trip", samples,
                      f"dbus-fast client, {rows} rows")
        results.quantity(section, "Status reply size", wire_size(reply), "bytes")
        gmo = Message(destination=BUS_NAME, path=MANAGER, interface=OBJECT_MANAGER_IFACE,
                      member="GetManagedObjects")
        reply = check_reply(await bus.call(gmo), "GetManagedObjects")
        objects = len(reply.body[0])
        samples = await repeat_async(counts.scale_gmo, lambda: bus.call(gmo))
        results.timed(section, "D-Bus GetManagedObjects", samples, f"{objects} objects")
        results.quantity(section, "GetManagedObjects reply size", wire_size(reply), "bytes")


class client:
    """A connected dbus-fast client (async context manager), disconnected afterwards."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.bus: MessageBus | None = None

    async def __aenter__(self) -> MessageBus:
        self.bus = await MessageBus(bus_address=self.address).connect()
        return self.bus

    async def __aexit__(self, *exc: object) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            await self.bus.wait_for_disconnect()


def idle_rss(results: Results, section: str, pid: int, settle: float) -> None:
    """vfiod's VmRSS after *settle* seconds with no calls."""
    time.sleep(settle)
    vm = vm_status(pid)
    results.quantity(section, "vfiod VmRSS, idle after start", vm["VmRSS"] / 1024, "MB",
                     f"VmHWM {vm['VmHWM'] / 1024:.1f} MB (peak so far)")


def run_cli(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run a command line client; its failure is a broken setup, not a figure."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env,
                            check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])} ... failed ({result.returncode}): "
                         f"{result.stderr.strip()[-500:]}")


def vfioctl_path() -> str:
    """The vfioctl next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "vfioctl"
    if beside.exists():
        return str(beside)
    found = shutil.which("vfioctl")
    if found is None:
        raise BenchError("vfioctl is not installed: run `make venv`")
    return found


def start_repeatedly(results: Results, section: str, daemons: Daemons, profile: str,
                     times: int) -> subprocess.Popen[bytes]:
    """Start vfiod *times* on fresh trees, timing each; the last one keeps running."""
    starts = []
    for i in range(times):
        proc, elapsed = daemons.start(profile)
        starts.append(elapsed)
        if i < times - 1:
            daemons.stop(proc)
    results.timed(section, "vfiod start until org.vfiod1 owned", starts,
                  "fresh sim tree each time")
    return proc


def bench_daemon_seed(results: Results, counts: Counts, daemons: Daemons) -> None:
    """4, 5, 6, 7 on seed-x99: start, Status, Bind+Unbind, vfioctl, busctl, RSS."""
    section = "vfiod on seed-x99"
    proc = start_repeatedly(results, section, daemons, "seed-x99", counts.seed_start)
    idle_rss(results, section, proc.pid, 1.0)
    asyncio.run(_dbus_seed(daemons.bus.address, results, counts, section))

    address = daemons.bus.address
    vfioctl = vfioctl_path()
    run_cli([vfioctl, "--address", address, "status"])  # warm the page cache
    results.timed(section, "vfioctl status (wall)",
                  repeat(counts.vfioctl, lambda: run_cli([vfioctl, "--address", address,
                                                          "status"])),
                  "a new Python process each time")
    busctl = ["busctl", f"--address={address}", "call", BUS_NAME, MANAGER, MANAGER_IFACE,
              "Status"]
    run_cli(busctl)
    results.timed(section, "busctl call ... Status (wall)",
                  repeat(counts.busctl, lambda: run_cli(busctl)))
    daemons.stop(proc)


def bench_daemon_scale(results: Results, counts: Counts, daemons: Daemons) -> None:
    """4, 5, 7 on scale: start, Status, GetManagedObjects, RSS."""
    section = "vfiod on scale"
    proc = start_repeatedly(results, section, daemons, "scale", counts.scale_start)
    idle_rss(results, section, proc.pid, 2.0)
    asyncio.run(_dbus_scale(daemons.bus.address, results, counts, section))
    vm = vm_status(proc.pid)
    results.quantity(section, "vfiod VmRSS after the calls", vm["VmRSS"] / 1024, "MB",
                     f"VmHWM {vm['VmHWM'] / 1024:.1f} MB")
    daemons.stop(proc)


# -- main -------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description="Measure vfiod's pieces and print figures.")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (raw samples in seconds) instead "
                             "of the table")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (a smoke run of about a minute)")
    parser.add_argument("--only", default=",".join(SECTIONS), metavar="SECTIONS",
                        help=f"comma-separated subset of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(SECTIONS)}")
    return args


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through every finally, like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and print the table (or JSON); 0 when all ran."""
    args = parse_args(argv)
    counts = QUICK if args.quick else Counts()
    signal.signal(signal.SIGTERM, _sigterm)
    results = Results()
    results.machine = machine_facts()
    started = time.perf_counter()
    status = 0
    failure = ""
    try:
        with ExitStack() as stack:
            if "sim" in args.sections:
                bench_sim(results, counts)
            if "engine" in args.sections:
                bench_engine(results, counts)
            if {"daemon-seed", "daemon-scale"} & set(args.sections):
                for tool in ("dbus-daemon", "busctl"):
                    if shutil.which(tool) is None:
                        raise BenchError(f"{tool} is missing: run `make setup`")
                bus = stack.enter_context(PrivateBus())
                daemons = Daemons(bus, stack)
                if "daemon-seed" in args.sections:
                    bench_daemon_seed(results, counts, daemons)
                if "daemon-scale" in args.sections:
                    bench_daemon_scale(results, counts, daemons)
    except KeyboardInterrupt:
        failure = "interrupted"
        status = 130
    except Exception as exc:  # a broken setup: say what, show what was measured
        failure = f"failed: {type(exc).__name__}: {exc}"
        status = 1
    if failure:
        print(f"bench {failure}; every process it started was stopped; "
              "partial figures follow", file=sys.stderr)
    results.machine["bench wall time"] = f"{time.perf_counter() - started:.1f} s"
    results.machine["load average"] += (
        "; at end {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.json:
        print(json.dumps({"machine": results.machine, "mode": "quick" if args.quick else "full",
                          "complete": not failure, "failure": failure,
                          "counts": asdict(counts),
                          "figures": [f.to_json() for f in results.figures]}, indent=2))
    else:
        print(render_table(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
