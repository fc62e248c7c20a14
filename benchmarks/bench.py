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
import compileall
import gc
import io
import json
import os
import platform
import re
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
from dbus_fast._private.unmarshaller import Unmarshaller  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402

from benchmarks.goals import GOALS, GROWTH_SIZES  # noqa: E402
from vfiod.discovery import scan  # noqa: E402
from vfiod.engine import Engine  # noqa: E402
from vfiod.privatebus import PrivateBus, start_vfiod, stop_vfiod  # noqa: E402
from vfiod.sim import SimHost  # noqa: E402
from vfiod.sim.host import scratch_dir  # noqa: E402

#: vfiod's log line saying how long building its simulated machine took.
SIM_BUILT = re.compile(r"simulated \S+ machine (?:built|re-attached) in ([0-9.]+) s")

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
    release: int = 5
    storm_calls: int = 200
    growth_start: int = 2
    growth_calls: int = 10
    growth_cli: int = 3


QUICK = Counts(seed_build=3, scale_build=1, scale_scan=1, scale_status_cold=1,
               scale_status_warm=3, engine_bind=5, seed_start=1, scale_start=1,
               seed_status=50, scale_status=5, scale_gmo=2, dbus_bind=3, vfioctl=3,
               busctl=3, release=2, storm_calls=100, growth_start=1, growth_calls=3,
               growth_cli=1)

#: Where each run writes its JSON document (readme_table.py reads it).
LAST_JSON = REPO / "benchmarks" / "last.json"


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
    #: The issue's name for the figure (benchmarks/goals.py), or a name of the README's
    #: (readme_table.py), "" for an unnamed one.
    key: str = ""
    #: The goal, in the figure's unit (seconds, MB, a ratio); None: none set.
    goal: float | None = None
    #: What is held against the goal: "median", "p99", or "value".
    judged: str = "median"

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

    @property
    def p99(self) -> float | None:
        """The 99th percentile (nearest rank) in seconds; None below 2 samples."""
        if len(self.samples) < 2:
            return None
        ordered = sorted(self.samples)
        return ordered[max(1, -(-99 * len(ordered) // 100)) - 1]

    @property
    def judged_value(self) -> float | None:
        """The number held against the goal (the median, the p99, or the value)."""
        if self.value is not None:
            return self.value
        return self.p99 if self.judged == "p99" else self.median

    @property
    def met(self) -> bool | None:
        """True when the figure meets its goal; None without a goal or a figure."""
        judged = self.judged_value
        if self.goal is None or judged is None:
            return None
        return judged <= self.goal

    def to_json(self) -> dict[str, Any]:
        """The figure for --json: raw samples in seconds and the summary."""
        data = asdict(self)
        data.update(n=self.n, median_s=self.median, p90_s=self.p90, p99_s=self.p99,
                    judged_value=self.judged_value, met=self.met)
        return data


class Results:
    """The figures in the order measured, plus facts about the machine."""

    def __init__(self) -> None:
        self.machine: dict[str, Any] = {}
        self.figures: list[Figure] = []

    def timed(self, section: str, name: str, samples: list[float], note: str = "",
              key: str = "") -> Figure:
        """Record a repeated time measurement (samples in seconds); *key*: the issue's
        figure it is (its goal comes from benchmarks/goals.py)."""
        figure = Figure(section, name, list(samples), note=note, key=key)
        self._judge(figure)
        self.figures.append(figure)
        return figure

    def quantity(self, section: str, name: str, value: float, unit: str,
                 note: str = "", key: str = "") -> Figure:
        """Record a single quantity (a size, a count, an RSS, a ratio)."""
        figure = Figure(section, name, [], unit=unit, value=value, note=note, key=key)
        self._judge(figure)
        self.figures.append(figure)
        return figure

    @staticmethod
    def _judge(figure: Figure) -> None:
        goal = GOALS.get(figure.key)
        if goal is not None:
            figure.goal = goal.value
            figure.judged = goal.judged


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
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:g} {unit}".strip()


def _fmt_goal(f: Figure) -> str:
    """``<= 40.00 ms ok`` / ``<= 40.00 ms MISSED`` ("p99" when the p99 is judged)."""
    if f.goal is None:
        return ""
    shown = _fmt_quantity(f.goal, f.unit) if f.unit != "s" else _fmt_time(f.goal)
    verdict = {True: "ok", False: "MISSED", None: "?"}[f.met]
    return f"{'p99 ' if f.judged == 'p99' else ''}<= {shown} {verdict}"


def render_table(results: Results) -> str:
    """The plain-text table: machine facts, then one line per figure, with its goal."""
    lines = ["vfiod benchmarks"]
    for key, value in results.machine.items():
        if key == "load at start":
            value = "{:.2f} {:.2f} {:.2f} (1, 5, 15 min, at start)".format(*value)
            if "load at end" in results.machine:
                value += "; at end {:.2f} {:.2f} {:.2f}".format(
                    *results.machine["load at end"])
            key = "load average"
        elif key == "load at end":
            continue
        lines.append(f"  {key + ':':<18} {value}")
    rows = [("figure", "N", "median", "p90", "goal", "note")]
    section = None
    breaks: list[int] = []
    for f in results.figures:
        if f.section != section:
            section = f.section
            breaks.append(len(rows))
        if f.value is not None:
            rows.append((f.name, "1", _fmt_quantity(f.value, f.unit), "", _fmt_goal(f), f.note))
        else:
            p90 = f"{_fmt_time(f.p90)}" + (f" (p99 {_fmt_time(f.p99)})" if f.judged == "p99"
                                            else "")
            rows.append((f.name, str(f.n), _fmt_time(f.median), p90, _fmt_goal(f), f.note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    width = sum(widths) + 10 + max(len(r[5]) for r in rows)

    def line(row: tuple[str, ...]) -> str:
        return (f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
                f"{row[3]:>{widths[3]}}  {row[4]:<{widths[4]}}  {row[5]}").rstrip()

    out = [line(rows[0])]
    titles = iter(dict.fromkeys(f.section for f in results.figures))
    for i, row in enumerate(rows[1:], start=1):
        if i in breaks:
            out.append(f"-- {next(titles)} ".ljust(width, "-"))
        out.append(line(row))
    judged = [f for f in results.figures if f.met is not None]
    missed = [f for f in judged if not f.met]
    lines.append("")
    lines.extend(out)
    lines.append("")
    lines.append(f"goals: {len(judged) - len(missed)} of {len(judged)} met"
                 + (f"; missed: {', '.join(f.key for f in missed)}" if missed else ""))
    return "\n".join(lines)


# -- helpers ----------------------------------------------------------------------------

def compile_package() -> str:
    """Compile vfiod's modules to __pycache__ as ``make install`` does; what was done.

    An installed vfiod starts from bytecode. This checkout's modules may have none (an
    editable install never compiles them, and a machine with PYTHONDONTWRITEBYTECODE=1
    never writes them), and then every vfiod and vfioctl started here would compile
    ~50 modules from source first: 60-80 ms of each start measured on this machine.
    """
    package = REPO / "vfiod"
    if not compileall.compile_dir(package, quiet=1, workers=0):
        raise BenchError(f"cannot compile {package}")
    why = " (PYTHONDONTWRITEBYTECODE is set here)" if sys.flags.dont_write_bytecode else ""
    return f"vfiod's modules compiled to __pycache__ first, as `make install` does{why}"


def cpu_speed() -> float:
    """Milliseconds a fixed pure-Python loop takes now (the best of three): how fast this
    machine runs Python at the moment. On a shared VM it changes by half from one minute
    to the next; figures of runs whose speeds differ do not compare."""
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - began)
    return best * 1000


def machine_facts() -> dict[str, Any]:
    """CPU count, Python, kernel and load at start (figures on a busy machine are inflated)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load at start": list(os.getloadavg()),  # the table's "load average"
        "python loop": f"{cpu_speed():.0f} ms at start (1,000,000 additions, best of 3)",
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
    return len(wire_bytes(msg))


def wire_bytes(msg: Message) -> bytes:
    """A message as sent on the bus (header and body)."""
    return bytes(msg._marshall(False))  # dbus-fast's own serialiser; no public equivalent


def unmarshall(wire: bytes) -> Message:
    """Decode a message from its wire bytes as a dbus-fast client does on receipt."""
    decoded = Unmarshaller(io.BytesIO(wire)).unmarshall()  # private, like _marshall
    if decoded is None:
        raise BenchError("dbus-fast could not decode a whole message")
    return decoded


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
        #: The simulated tree of the vfiod started last.
        self.sim_root: Path | None = None
        #: How long the vfiod started last took to build its simulated machine.
        self.sim_seconds = 0.0

    def start(self, profile: str, config_text: str = "") -> tuple[subprocess.Popen[bytes], float]:
        """A vfiod on a fresh simulated *profile*; (process, seconds until it owned the
        name). *config_text*: its config file. ``sim_seconds`` is then the part of
        those seconds vfiod spent building the simulated machine (from its log)."""
        work = self.stack.enter_context(scratch(profile))
        state = self.stack.enter_context(scratch(f"{profile}-state", disk=True))
        config = work / "vfiod.toml"
        config.write_text(config_text)  # never this machine's /etc/vfiod
        self.sim_root = work / "sim"
        log = work / "vfiod.log"
        watch = NameWatch(self.bus.address)
        watch.start()
        try:
            watch.ready.wait(10)
            t0 = time.perf_counter()
            # start_vfiod stops the process itself when it fails to come up.
            proc = start_vfiod(self.bus, self.sim_root, profile, state, config,
                               log=log, timeout=240)
            returned = time.perf_counter()
            self.stack.callback(stop_vfiod, proc)
        finally:
            watch.stop()
        elapsed = (watch.owned_at if watch.owned_at is not None else returned) - t0
        found = SIM_BUILT.search(log.read_text(errors="replace"))
        self.sim_seconds = float(found.group(1)) if found else 0.0
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
                      f"dbus-fast client, {rows} rows", key="status_seed")
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
        results.timed(section, "D-Bus Bind+Unbind", pairs[1:], "as root (no polkit call)",
                      key="bind_unbind_dbus")


async def _dbus_scale(address: str, results: Results, counts: Counts, section: str) -> None:
    async with client(address) as bus:
        status = Message(destination=BUS_NAME, path=MANAGER, interface=MANAGER_IFACE,
                         member="Status")
        reply = check_reply(await bus.call(status), "Status")
        rows = len(reply.body[0])
        samples = await repeat_async(counts.scale_status, lambda: bus.call(status))
        results.timed(section, "D-Bus Status round trip", samples,
                      f"dbus-fast client, {rows} rows", key="status_scale")
        results.quantity(section, "Status reply size", wire_size(reply), "bytes")
        gmo = Message(destination=BUS_NAME, path=MANAGER, interface=OBJECT_MANAGER_IFACE,
                      member="GetManagedObjects")
        reply = check_reply(await bus.call(gmo), "GetManagedObjects")
        objects = len(reply.body[0])
        samples = await repeat_async(counts.scale_gmo, lambda: bus.call(gmo))
        results.timed(section, "D-Bus GetManagedObjects", samples, f"{objects} objects",
                      key="gmo_scale")
        wire = wire_bytes(reply)
        results.quantity(section, "GetManagedObjects reply size", len(wire), "bytes")
        gc.freeze()  # as in client(): the replies kept above are no part of the decoding
        results.timed(section, "  of it: the client unmarshalling the reply",
                      repeat(counts.scale_gmo, lambda: unmarshall(wire)),
                      "dbus-fast (compiled) decoding the same bytes, no bus",
                      key="gmo_scale_decode")


class client:
    """A connected dbus-fast client (async context manager), disconnected afterwards."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.bus: MessageBus | None = None

    async def __aenter__(self) -> MessageBus:
        # The client measured is a lean one: what the bench has kept so far (trees,
        # replies, figures) is frozen out of the cyclic collector, whose full passes
        # would otherwise walk it while a large reply is decoded (up to 2x the time).
        gc.freeze()
        self.bus = await MessageBus(bus_address=self.address).connect()
        return self.bus

    async def __aexit__(self, *exc: object) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            await self.bus.wait_for_disconnect()


def idle_rss(results: Results, section: str, pid: int, settle: float, key: str = "") -> float:
    """vfiod's VmRSS after *settle* seconds with no calls (MB, also returned)."""
    time.sleep(settle)
    vm = vm_status(pid)
    results.quantity(section, "vfiod VmRSS, idle after start", vm["VmRSS"] / 1024, "MB",
                     f"VmHWM {vm['VmHWM'] / 1024:.1f} MB (peak so far); includes the "
                     "simulated kernel", key=key)
    return vm["VmRSS"] / 1024


#: A process that holds only the simulated machine: its VmRSS (kB) with the simulator's
#: modules loaded (a 30-function machine built and closed first), then with the machine.
_SIM_ALONE = """
import sys, time
from vfiod.sim import SimHost
def rss():
    return next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS:"))
SimHost(profile="scale-30").close()
before = rss()
host = SimHost(profile=sys.argv[1])
time.sleep(float(sys.argv[2]))
print(before, rss())
host.close()
"""


def sim_alone_rss(results: Results, section: str, profile: str, settle: float,
                  vfiod_rss_mb: float, key: str) -> None:
    """What the simulated machine adds to vfiod's RSS, measured in a Python process that
    holds only it, and vfiod's RSS less that (under *key*): the simulated kernel runs in
    vfiod's process under --simulate, never on a real host."""
    done = subprocess.run([sys.executable, "-c", _SIM_ALONE, profile, str(settle)],
                          capture_output=True, text=True, timeout=180, check=False,
                          cwd=REPO, stdin=subprocess.DEVNULL)
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 2 or not all(f.isdigit() for f in fields):
        raise BenchError(f"the simulated machine alone failed: {done.stderr.strip()[-500:]}")
    before, after = (int(f) / 1024 for f in fields)
    results.quantity(section, "  the simulated machine alone, no vfiod", after, "MB",
                     f"VmRSS of a Python process holding only it; {after - before:.1f} MB "
                     "of that is the machine (the rest Python and the simulator's modules)")
    results.quantity(section, "  vfiod less the simulated machine", vfiod_rss_mb
                     - (after - before), "MB", "the line above less the machine's own part: "
                     "vfiod's RSS on a host whose kernel is not in its process (estimate)",
                     key=key)


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
                     times: int, key: str = "") -> subprocess.Popen[bytes]:
    """Start vfiod *times* on fresh trees, timing each; the last one keeps running.

    Two lines: the whole start (the figure of earlier rounds), and the same starts less
    the time vfiod spent building its simulated machine (it logs that apart): what
    vfiod costs on a host whose /sys is there already, held against the goal (*key*).
    """
    starts, own = [], []
    for i in range(times):
        proc, elapsed = daemons.start(profile)
        starts.append(elapsed)
        own.append(elapsed - daemons.sim_seconds)
        if i < times - 1:
            daemons.stop(proc)
    results.timed(section, "vfiod start until org.vfiod1 owned", starts,
                  "fresh sim tree each time, built by vfiod (included)",
                  key=f"{key}_with_build" if key else "")
    results.timed(section, "vfiod start, less the sim build", own,
                  "the same starts less building the simulated machine (vfiod's log)",
                  key=key)
    return proc


def bench_daemon_seed(results: Results, counts: Counts, daemons: Daemons) -> None:
    """4, 5, 6, 7 on seed-x99: start, Status, Bind+Unbind, vfioctl, busctl, RSS."""
    section = "vfiod on seed-x99"
    proc = start_repeatedly(results, section, daemons, "seed-x99", counts.seed_start,
                            "start_seed")
    rss = idle_rss(results, section, proc.pid, 1.0, "rss_seed")
    sim_alone_rss(results, section, "seed-x99", 1.0, rss, "rss_seed_less_sim")
    asyncio.run(_dbus_seed(daemons.bus.address, results, counts, section))

    address = daemons.bus.address
    vfioctl = vfioctl_path()
    run_cli([vfioctl, "--address", address, "status"])  # warm the page cache
    results.timed(section, "vfioctl status (wall)",
                  repeat(counts.vfioctl, lambda: run_cli([vfioctl, "--address", address,
                                                          "status"])),
                  "a new Python process each time", key="vfioctl_status")
    busctl = ["busctl", f"--address={address}", "call", BUS_NAME, MANAGER, MANAGER_IFACE,
              "Status"]
    run_cli(busctl)
    results.timed(section, "busctl call ... Status (wall)",
                  repeat(counts.busctl, lambda: run_cli(busctl)))
    daemons.stop(proc)


def bench_daemon_scale(results: Results, counts: Counts, daemons: Daemons) -> None:
    """4, 5, 7 on scale: start, Status, GetManagedObjects, RSS."""
    section = "vfiod on scale"
    proc = start_repeatedly(results, section, daemons, "scale", counts.scale_start,
                            "start_scale")
    rss = idle_rss(results, section, proc.pid, 2.0, "rss_scale")
    sim_alone_rss(results, section, "scale", 2.0, rss, "rss_scale_less_sim")
    asyncio.run(_dbus_scale(daemons.bus.address, results, counts, section))
    vm = vm_status(proc.pid)
    results.quantity(section, "vfiod VmRSS after the calls", vm["VmRSS"] / 1024, "MB",
                     f"VmHWM {vm['VmHWM'] / 1024:.1f} MB")
    daemons.stop(proc)


# -- side by side, growth, release, storm ---------------------------------------------

#: The guest's GPU group on seed-x99 and a function with a fast reset (pm).
GPU_NODE = "/dev/vfio/31"
ONBOARD_AUDIO = "0000:00:1b.0"
ONBOARD_AUDIO_NODE = "/dev/vfio/9"
#: The storm: this many clients, each with one Status call in flight at all times.
STORM_CLIENTS = 50


def lspci_addresses(sim_root: Path) -> set[str]:
    """The functions ``lspci -A linux-sysfs -O sysfs.path=...`` lists on a simulated tree
    (``-D``: with their domain)."""
    out = subprocess.run(["lspci", "-D", "-A", "linux-sysfs", "-O",
                          f"sysfs.path={sim_root}/sys/bus/pci"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line and not line[0].isspace()}


def check_lspci_reads_the_tree(sim_root: Path) -> None:
    """lspci must list exactly the tree's functions: the GTX 1080 Ti of seed-x99 (which
    this machine lacks) and none of this machine's own (BenchError otherwise)."""
    tree = {a for a in os.listdir(sim_root / "sys/bus/pci/devices")}
    listed = lspci_addresses(sim_root)
    if listed != tree or GPU not in listed:
        raise BenchError(f"lspci did not read the simulated tree: it listed {len(listed)} "
                         f"functions, the tree has {len(tree)}")


def bench_compare(results: Results, counts: Counts, daemons: Daemons) -> None:
    """Side by side in one run: `vfioctl status` against lspci on the same tree, and the
    engine's bind+unbind against the simulated kernel's own write times."""
    section = "side by side (seed-x99, one run)"
    if shutil.which("lspci") is None:
        raise BenchError("lspci is missing: install pciutils (make setup)")
    proc, _ = daemons.start("seed-x99")
    assert daemons.sim_root is not None
    sim_root = daemons.sim_root
    check_lspci_reads_the_tree(sim_root)
    vfioctl = [vfioctl_path(), "--address", daemons.bus.address, "status"]
    lspci = ["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={sim_root}/sys/bus/pci", "-k"]
    run_cli(vfioctl)
    run_cli(lspci)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(counts.vfioctl):  # interleaved, so that load changes hit both alike
        ours += repeat(1, lambda: run_cli(vfioctl))
        theirs += repeat(1, lambda: run_cli(lspci))
    results.timed(section, "vfioctl status (wall)", ours, "interleaved with lspci",
                  key="cmp_vfioctl")
    results.timed(section, "lspci -k on the same tree (wall)", theirs,
                  "-A linux-sysfs -O sysfs.path=SIMROOT/sys/bus/pci", key="cmp_lspci")
    results.quantity(section, "vfioctl status / lspci -k", statistics.median(ours)
                     / statistics.median(theirs), "x", "ratio of the medians",
                     key="cmp_vfioctl_ratio")
    daemons.stop(proc)

    # The bind against the kernel's work: every write the engine makes is timed where
    # the simulated kernel performs it (SimHost._write), inside the same bind.
    with SimHost(profile="seed-x99") as host, scratch("compare", disk=True) as state:
        engine = Engine(host, state)
        engine.devices()
        kernel_time = [0.0]
        kernel_write = host._write

        def timed_write(path: str, value: str) -> None:
            t0 = time.perf_counter()
            try:
                kernel_write(path, value)
            finally:
                kernel_time[0] += time.perf_counter() - t0

        host._write = timed_write  # type: ignore[method-assign]
        engine.unbind(engine.bind(GPU)[0])  # the first pair (vfio-pci loads) apart
        totals, kernel = [], []
        for _ in range(counts.engine_bind):
            kernel_time[0] = 0.0
            t0 = time.perf_counter()
            engine.bind(GPU)
            engine.unbind(GPU)
            totals.append(time.perf_counter() - t0)
            kernel.append(kernel_time[0])
    results.timed(section, "Engine bind+unbind", totals, "in-process, GPU + audio",
                  key="cmp_engine")
    results.timed(section, "  of which the kernel's writes", kernel,
                  "the simulated kernel's own time for the same writes", key="cmp_kernel")
    results.quantity(section, "bind+unbind / kernel's writes",
                     statistics.median(totals) / max(statistics.median(kernel), 1e-9), "x",
                     "vfiod's overhead as a ratio (1x: none)", key="cmp_bind_ratio")


class SignalLog:
    """Manager.DeviceChanged signals with the moment each arrived (a dbus-fast client)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.seen: list[tuple[float, str, str, str]] = []
        self._changed = asyncio.Event()

    async def start(self) -> SignalLog:
        def on_message(msg: Message) -> None:
            if msg.message_type is MessageType.SIGNAL and msg.member == "DeviceChanged":
                self.seen.append((time.perf_counter(), *msg.body))
                self._changed.set()

        self.bus.add_message_handler(on_message)
        check_reply(await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',interface='{MANAGER_IFACE}',member='DeviceChanged'"])),
            "AddMatch")
        return self

    async def until(self, done: Callable[[], float | None], timeout: float = 30) -> float:
        """Wait until *done()* gives a moment (perf_counter); that moment."""
        deadline = time.monotonic() + timeout
        while (moment := done()) is None:
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("vfiod did not announce the expected change in time")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass
        return moment

    def first(self, after: float, address: str, state: str) -> float | None:
        """When *address* was first announced in *state* after *after*."""
        return next((t for t, a, st, _ in self.seen if t > after and a == address
                     and st == state), None)

    def all_in(self, after: float, addresses: list[str], state: str) -> float | None:
        """When the last of *addresses* was first announced in *state* after *after*."""
        moments = [self.first(after, a, state) for a in addresses]
        return None if None in moments else max(m for m in moments if m is not None)


async def _release_runs(address: str, members: list[str], node: str, back: str,
                        sim_root: Path, bus_address: str, runs: int) -> list[float]:
    """Bind *address*, let a guest hold *node* and exit, *runs* times; each time the
    seconds from the guest's exit until DeviceChanged showed every member in *back*."""
    from vfiod.sim.holder import spawn_holder

    samples = []
    async with client(bus_address) as bus:
        log = await SignalLog(bus).start()
        bind = Message(destination=BUS_NAME, path=MANAGER, interface=MANAGER_IFACE,
                       member="Bind", signature="sa{sv}", body=[address, {}])
        for _ in range(runs):
            check_reply(await bus.call(bind), "Bind")
            before = time.perf_counter()
            guest = spawn_holder(sim_root, [node], comm="qemu-system-x86")
            try:
                await log.until(lambda: log.first(before, address, "guest"))
            finally:
                exited = time.perf_counter()
                guest.close()
            samples.append(await log.until(lambda: log.all_in(exited, members, back))
                           - exited)
    return samples


def bench_release(results: Results, counts: Counts, daemons: Daemons) -> None:
    """Guest exit to devices back: on_release host (the GPU pair back on its host
    drivers) and on_release reset (the onboard audio reset and free again)."""
    section = "guest exit (seed-x99, simulated holder)"
    config = (f'[[device]]\nmatch = "{GPU}"\non_release = "host"\n\n'
              f'[[device]]\nmatch = "{ONBOARD_AUDIO}"\non_release = "reset"\n')
    proc, _ = daemons.start("seed-x99", config)
    assert daemons.sim_root is not None
    runs = counts.release
    samples = asyncio.run(_release_runs(GPU, GPU_GROUP, GPU_NODE, "host", daemons.sim_root,
                                        daemons.bus.address, runs))
    results.timed(section, "guest exit to GPU pair on host drivers", samples,
                  "on_release host; until DeviceChanged shows both", key="release_host")
    samples = asyncio.run(_release_runs(ONBOARD_AUDIO, [ONBOARD_AUDIO], ONBOARD_AUDIO_NODE,
                                        "vfio", daemons.sim_root, daemons.bus.address, runs))
    results.timed(section, "guest exit to audio reset and free", samples,
                  "on_release reset (pm); until DeviceChanged shows vfio",
                  key="release_reset")
    daemons.stop(proc)


_STORM = r"""
import asyncio, sys, time
from dbus_fast import Message
from dbus_fast.aio import MessageBus

async def one(address, stop):
    bus = await MessageBus(bus_address=address).connect()
    msg = Message(destination="org.vfiod1", path="/org/vfiod1",
                  interface="org.vfiod1.Manager", member="Status")
    calls = 0
    while time.monotonic() < stop:
        await bus.call(msg)
        calls += 1
    bus.disconnect()
    return calls

async def main(address, clients, seconds):
    stop = time.monotonic() + seconds
    print("ready", flush=True)
    print(sum(await asyncio.gather(*(one(address, stop) for _ in range(clients)))))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


async def _status_samples(address: str, n: int) -> list[float]:
    async with client(address) as bus:
        status = Message(destination=BUS_NAME, path=MANAGER, interface=MANAGER_IFACE,
                         member="Status")
        await repeat_async(3, lambda: bus.call(status))
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            check_reply(await bus.call(status), "Status")
            samples.append(time.perf_counter() - t0)
            await asyncio.sleep(0.005)  # a client that asks now and then, not a flood
        return samples


def bench_storm(results: Results, counts: Counts, daemons: Daemons) -> None:
    """Status round trips of one client while 50 others call Status back to back."""
    section = "Status storm (seed-x99)"
    proc, _ = daemons.start("seed-x99")
    seconds = 3 + counts.storm_calls * 0.01
    storm = subprocess.Popen([sys.executable, "-c", _STORM, daemons.bus.address,
                              str(STORM_CLIENTS), f"{seconds:g}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert storm.stdout is not None
        if storm.stdout.readline().strip() != "ready":
            raise BenchError(f"the storm did not start: {storm.stderr.read()[-300:]}")
        time.sleep(0.5)  # its clients connected and calling
        samples = asyncio.run(_status_samples(daemons.bus.address, counts.storm_calls))
        out, err = storm.communicate(timeout=seconds + 60)
        if storm.returncode != 0:
            raise BenchError(f"the storm failed: {err.strip()[-300:]}")
    finally:
        if storm.poll() is None:
            storm.kill()
            storm.wait()
    calls = int(out.strip() or 0)
    results.timed(section, "Status round trip during the storm", samples,
                  f"{STORM_CLIENTS} clients made {calls / seconds:,.0f} calls/s",
                  key="status_storm_p99")
    daemons.stop(proc)


def bench_growth(results: Results, counts: Counts, daemons: Daemons) -> None:
    """How the costs grow: start, RSS, Status, GetManagedObjects and vfioctl status at
    30, 1,000 and 4,096 functions (start less the simulated machine's build)."""
    vfioctl = vfioctl_path()
    for size in GROWTH_SIZES:
        section = f"growth: {size:,} functions (scale-{size})"
        proc = start_repeatedly(results, section, daemons, f"scale-{size}",
                                counts.growth_start, f"growth_start_{size}")
        idle_rss(results, section, proc.pid, 1.0, f"growth_rss_{size}")
        asyncio.run(_growth_calls(daemons.bus.address, results, counts, section, size))
        command = [vfioctl, "--address", daemons.bus.address, "status"]
        run_cli(command)
        results.timed(section, "vfioctl status (wall)", repeat(counts.growth_cli,
                                                              lambda: run_cli(command)),
                      key=f"growth_vfioctl_{size}")
        daemons.stop(proc)


async def _growth_calls(address: str, results: Results, counts: Counts, section: str,
                        size: int) -> None:
    async with client(address) as bus:
        for member, iface, key in (("Status", MANAGER_IFACE, "status"),
                                   ("GetManagedObjects", OBJECT_MANAGER_IFACE, "gmo")):
            msg = Message(destination=BUS_NAME, path=MANAGER, interface=iface, member=member)
            check_reply(await bus.call(msg), member)
            samples = await repeat_async(counts.growth_calls, lambda: bus.call(msg))
            results.timed(section, f"D-Bus {member} round trip", samples,
                          key=f"growth_{key}_{size}")


# -- main -------------------------------------------------------------------------------

#: Each section's function: those that need no daemon, then those sharing a private bus.
BENCHES: dict[str, Callable[[Results, Counts], None]] = {
    "sim": bench_sim, "engine": bench_engine}
DAEMON_BENCHES: dict[str, Callable[[Results, Counts, Daemons], None]] = {
    "daemon-seed": bench_daemon_seed, "daemon-scale": bench_daemon_scale,
    "compare": bench_compare, "release": bench_release, "storm": bench_storm,
    "growth": bench_growth}
#: The sections, in the order they run.
SECTIONS = (*BENCHES, *DAEMON_BENCHES)

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description="Measure vfiod's pieces and print figures.")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (raw samples in seconds) instead "
                             "of the table")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (a smoke run of about a minute)")
    parser.add_argument("--out", default=str(LAST_JSON), metavar="PATH",
                        help="where the JSON document goes too (default: %(default)s; "
                             "benchmarks/readme_table.py makes the README's table from it)")
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
    results.machine["bytecode"] = compile_package()
    started = time.perf_counter()
    status = 0
    failure = ""
    try:
        with ExitStack() as stack:
            for name, bench in BENCHES.items():
                if name in args.sections:
                    bench(results, counts)
            if set(DAEMON_BENCHES) & set(args.sections):
                for tool in ("dbus-daemon", "busctl"):
                    if shutil.which(tool) is None:
                        raise BenchError(f"{tool} is missing: run `make setup`")
                bus = stack.enter_context(PrivateBus())
                daemons = Daemons(bus, stack)
                for name, daemon_bench in DAEMON_BENCHES.items():
                    if name in args.sections:
                        daemon_bench(results, counts, daemons)
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
    results.machine["load at end"] = list(os.getloadavg())
    results.machine["python loop"] += f"; {cpu_speed():.0f} ms at end"
    document = json.dumps({"machine": results.machine, "mode": "quick" if args.quick else "full",
                           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "sections": args.sections, "complete": not failure,
                           "failure": failure, "counts": asdict(counts),
                           "goals": {k: asdict(g) for k, g in GOALS.items()},
                           "figures": [f.to_json() for f in results.figures]}, indent=2)
    if args.out:
        Path(args.out).write_text(document + "\n")
    if args.json:
        print(document)
    else:
        print(render_table(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
