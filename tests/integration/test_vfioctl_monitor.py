"""``vfioctl monitor`` follows changes made by anyone, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .helpers import Vfiod
from .vfioctl_helpers import vfioctl_argv

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"


class Follower:
    """A running ``vfioctl monitor`` whose stdout lines can be awaited."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._buffer = ""

    def wait_line(self, predicate: Callable[[str], Any], timeout: float = 30.0) -> str:
        """The first line (seen so far or arriving within *timeout*) matching."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line within {timeout:g} s; got "
                                     f"{self.lines!r}")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536).decode()
                if not chunk:
                    raise AssertionError(f"monitor ended (status {self.proc.wait()}); "
                                         f"got {self.lines!r}")
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split("\n")
                self.lines += complete


@contextmanager
def monitor(daemon: Vfiod, *args: str) -> Iterator[Follower]:
    """``vfioctl monitor ARGS`` running until the block ends (then killed if still up)."""
    proc = subprocess.Popen(vfioctl_argv(daemon.address, "monitor", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield Follower(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def json_event(event: str, **fields: Any) -> Callable[[str], bool]:
    """A predicate for a JSON line of that event with those fields."""
    def matches(line: str) -> bool:
        obj = json.loads(line)
        return obj.get("event") == event and all(obj.get(k) == v for k, v in fields.items())
    return matches


def test_monitor_json_prints_a_line_for_a_bind_made_by_busctl(vfiod: Vfiod) -> None:
    with monitor(vfiod, "--json") as follower:
        ready = json.loads(follower.wait_line(json_event("Ready")))
        assert ready["devices"] == len(vfiod.status())
        assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
        line = follower.wait_line(json_event("DeviceChanged", address=GPU, state="vfio",
                                             driver="vfio-pci"))
        assert "T" in json.loads(line)["time"]
        follower.wait_line(json_event("DeviceChanged", address=AUDIO, driver="vfio-pci"))
        follower.wait_line(lambda l: json_event("PropertiesChanged", address=GPU)(l)
                           and json.loads(l)["changed"].get("driver") == "vfio-pci")
        assert all(json.loads(l) for l in follower.lines)  # every line is one object


def test_monitor_shows_a_busy_state_while_an_operation_runs(vfiod: Vfiod) -> None:
    with monitor(vfiod, "--json") as follower:
        follower.wait_line(json_event("Ready"))
        assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
        follower.wait_line(json_event("DeviceChanged", address=GPU, state="busy"))


def test_monitor_text_prints_one_line_per_device_change(vfiod: Vfiod) -> None:
    with monitor(vfiod) as follower:
        follower.wait_line(lambda l: l.startswith("following "))
        assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
        line = follower.wait_line(lambda l: GPU in l and "state busy -> vfio" in l)
        assert "GeForce GTX 1080 Ti" in line
        # Under load a uevent may publish the audio function unbound on its way (a line
        # "snd_hda_intel -> -", then "- -> vfio-pci"): only where it ends is fixed.
        follower.wait_line(lambda l: AUDIO in l and "-> vfio-pci" in l)


def test_monitor_reports_vfiod_leaving_the_bus(vfiod: Vfiod) -> None:
    with monitor(vfiod, "--json") as follower:
        follower.wait_line(json_event("Ready"))
        vfiod.stop()
        follower.wait_line(json_event("VfiodStopped"))
        assert follower.proc.poll() is None  # it waits for vfiod to come back


def test_monitor_ends_with_status_0_on_sigterm_and_on_ctrl_c(vfiod: Vfiod) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        with monitor(vfiod) as follower:
            follower.wait_line(lambda l: l.startswith("following "))
            follower.proc.send_signal(signum)
            assert follower.proc.wait(10) == 0
            assert follower.proc.stderr is not None
            assert follower.proc.stderr.read() == ""
