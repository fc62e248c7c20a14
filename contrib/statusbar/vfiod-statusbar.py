#!/usr/bin/env python3
"""A waybar / polybar module for vfiod, on ``vfioctl monitor --json`` (standard library only).

Prints one line each time what it shows changes:
- ``--format waybar``: a JSON object (``text``, ``tooltip``, ``class``, ``alt``) for a
  waybar ``custom`` module with ``"return-type": "json"``;
- ``--format polybar``: a text line with polybar colour tags, for a ``custom/script``
  module with ``tail = true``.

By default it runs ``vfioctl monitor --json`` itself and, once the monitor says its
subscription is in place (its ``Ready`` line), reads every device once with
``vfioctl status --json``; again when vfiod comes back. With ``--stdin`` it reads the
monitor's lines from standard input instead (``--seed FILE``: the status to start from).
Nothing polls. Classes: ``host`` (every device on the host), ``guests`` (some on
vfio-pci), ``error`` (one in error or unhealthy), ``stopped`` (vfiod not running).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

#: polybar colours per class (waybar users style the class in their CSS).
POLYBAR_COLOURS = {"host": "#2ea043", "guests": "#1f6feb", "error": "#d73a49",
                   "stopped": "#888888"}
#: The monitor's field names for the properties the module uses.
FIELDS = ("state", "driver", "holder", "healthy", "name")

Devices = dict[str, dict[str, Any]]


def seed(status: Iterable[dict[str, Any]]) -> Devices:
    """Devices by address from ``vfioctl status --json``."""
    return {d["address"]: {k: d.get(k) for k in FIELDS} for d in status}


def apply(event: dict[str, Any], devices: Devices) -> bool | None:
    """Apply one monitor event to *devices*; returns False when vfiod left, True when it
    came back (the caller reseeds), None otherwise."""
    kind = event.get("event")
    if kind == "DeviceChanged":
        dev = devices.setdefault(event["address"], {})
        dev.update(state=event["state"], driver=event["driver"])
    elif kind == "PropertiesChanged":
        dev = devices.setdefault(event["address"], {})
        dev.update({k: v for k, v in event.get("changed", {}).items() if k in FIELDS})
    elif kind == "DeviceAdded":
        device = event["device"]
        devices[device["address"]] = {k: device.get(k) for k in FIELDS}
    elif kind == "DeviceRemoved":
        devices.pop(event["address"], None)
    elif kind == "VfiodStopped":
        return False
    elif kind == "VfiodStarted":
        return True
    return None


def summary(devices: Devices, running: bool) -> tuple[str, str, str]:
    """(class, text, tooltip) for what vfiod reports."""
    if not running:
        return "stopped", "VFIO: vfiod not running", "vfiod is not running"
    guest = sorted(a for a, d in devices.items() if d.get("state") == "guest")
    free = sorted(a for a, d in devices.items() if d.get("state") == "vfio")
    broken = sorted(a for a, d in devices.items()
                    if d.get("state") == "error" or d.get("healthy") is False)
    lines = [f"{a} {devices[a].get('name') or ''}: {devices[a].get('state')}"
             + (f" ({devices[a]['holder']})" if devices[a].get("holder") else "")
             for a in sorted({*guest, *free, *broken})]
    if broken:
        return "error", f"VFIO: {len(broken)} in error", "\n".join(lines)
    if guest or free:
        parts = [f"{len(guest)} in guests"] if guest else []
        parts += [f"{len(free)} free"] if free else []
        return "guests", "VFIO: " + ", ".join(parts), "\n".join(lines)
    return "host", "VFIO: all on host", "every device is on the host"


def render(devices: Devices, running: bool, fmt: str) -> str:
    """The status line in *fmt* (``waybar`` or ``polybar``)."""
    cls, text, tip = summary(devices, running)
    if fmt == "waybar":
        return json.dumps({"text": text, "alt": cls, "class": cls, "tooltip": tip},
                          ensure_ascii=False)
    return f"%{{F{POLYBAR_COLOURS[cls]}}}{text}%{{F-}}"


def follow(lines: Iterable[str], fmt: str, devices: Devices,
           reseed: Any = None) -> Iterator[str]:
    """Status lines for a stream of monitor lines, each only when it changed."""
    running, last = True, None
    for line in lines:
        line = line.strip()
        if not line:
            continue
        event = json.loads(line)
        if event.get("event") == "Ready" and reseed is not None:
            devices = reseed()
        came = apply(event, devices)
        if came is not None:
            running = came
            if came and reseed is not None:
                devices = reseed()
        shown = render(devices, running, fmt)
        if shown != last:
            last = shown
            yield shown


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--format", choices=("waybar", "polybar"), default="waybar")
    parser.add_argument("--vfioctl", default="vfioctl",
                        help="the vfioctl command, with options (e.g. 'vfioctl --session')")
    parser.add_argument("--stdin", action="store_true",
                        help="read monitor lines from standard input")
    parser.add_argument("--seed", help="with --stdin: a `vfioctl status --json` file")
    args = parser.parse_args(argv)
    vfioctl = shlex.split(args.vfioctl)
    if args.stdin:
        devices = seed(json.load(open(args.seed))) if args.seed else {}
        out = follow(sys.stdin, args.format, devices)
    else:
        def reseed() -> Devices:
            done = subprocess.run([*vfioctl, "status", "--json"], capture_output=True,
                                  text=True, check=False)
            return seed(json.loads(done.stdout)) if done.returncode == 0 else {}
        monitor = subprocess.Popen([*vfioctl, "monitor", "--json"], stdout=subprocess.PIPE,
                                   text=True)
        assert monitor.stdout is not None
        out = follow(monitor.stdout, args.format, {}, reseed)
    try:
        for line in out:
            print(line, flush=True)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    if args.stdin:
        return 0
    # The monitor ended (vfiod's bus went away): say so; the bar restarts the module.
    print(render({}, False, args.format), flush=True)
    return monitor.wait()


if __name__ == "__main__":
    sys.exit(main())
