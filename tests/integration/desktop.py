"""A real desktop under Xvfb for the applet's desktop test: xfce4-panel (whose system
tray hosts StatusNotifierItems) and dunst (a notification daemon) on a private session
bus, with screenshots (ImageMagick's ``import``) and input (``xdotool``).

Everything runs with HOME and the XDG folders in a temp dir, so nothing of this
machine's own desktop configuration is read or written; every process started here
is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfiod.privatebus import die_with_parent

from .helpers import wait_for

TOOLS = ("Xvfb", "xfce4-panel", "dunst", "dunstctl", "xdotool", "import", "dbus-daemon")
WIDTH, HEIGHT = 800, 480

#: One panel along the top holding only the system tray (xfconf's own file format).
PANEL_XML = """<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-panel" version="1.0">
  <property name="configver" type="int" value="2"/>
  <property name="panels" type="array">
    <value type="int" value="1"/>
    <property name="panel-1" type="empty">
      <property name="position" type="string" value="p=6;x=0;y=0"/>
      <property name="length" type="uint" value="100"/>
      <property name="position-locked" type="bool" value="true"/>
      <property name="size" type="uint" value="32"/>
      <property name="plugin-ids" type="array">
        <value type="int" value="1"/>
      </property>
    </property>
  </property>
  <property name="plugins" type="empty">
    <property name="plugin-1" type="string" value="systray"/>
  </property>
</channel>
"""

DUNSTRC = """[global]
    origin = bottom-right
    offset = 10x10
    width = 360
    font = Monospace 9
    timeout = 0
"""


def missing_tools() -> list[str]:
    """The desktop tools that are not installed (`make setup` installs them)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True)
class MenuRow:
    """One row of text in a menu on screen."""

    highlighted: bool
    enabled: bool
    #: Where it is on screen (the y of its middle), not part of comparisons.
    middle: int = field(default=0, compare=False)


def _row(band: list[tuple[bool, int]], bottom: int) -> MenuRow:
    highlighted = any(blue for blue, _ in band)
    # Enabled text is near black (Adwaita #2e3436), disabled grey (#8b8e8f); a
    # highlighted item's text is white on blue, and only an enabled one is highlighted.
    darkest = min(luma for _, luma in band)
    return MenuRow(highlighted, highlighted or darkest < 100, bottom - len(band) // 2)


@dataclass
class Screen:
    """A raw RGB snapshot of the whole screen."""

    width: int
    height: int
    rgb: bytes

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        """The (r, g, b) at x, y."""
        i = (y * self.width + x) * 3
        return self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]

    def changed_box(self, other: Screen, rows: range, columns: range | None = None
                    ) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) of the pixels that differ from *other* in *rows*
        (and *columns*: all by default)."""
        xs: list[int] = []
        ys: list[int] = []
        for y in rows:
            start = y * self.width * 3
            a = self.rgb[start:start + self.width * 3]
            b = other.rgb[start:start + self.width * 3]
            if a == b:
                continue
            for x in columns or range(self.width):
                if a[x * 3:x * 3 + 3] != b[x * 3:x * 3 + 3]:
                    xs.append(x)
                    ys.append(y)
        if not xs:
            return None
        return min(xs), min(ys), max(xs), max(ys)

    def text_rows(self, box: tuple[int, int, int, int]) -> list[MenuRow]:
        """The rows of text a menu shows inside *box*, top to bottom: for each, whether
        it is highlighted (the selection's blue behind it) and whether its text is drawn
        dark (an enabled item) or grey (a disabled one)."""
        # Inside the menu's border (a frame line would join every row into one).
        left, top, right, bottom = box[0] + 3, box[1] + 3, box[2] - 3, box[3] - 3
        rows: list[MenuRow] = []
        band: list[tuple[bool, int]] = []
        for y in range(top, bottom + 1):
            pixels = [self.pixel(x, y) for x in range(left, right + 1)]
            background = max(set(pixels), key=pixels.count)
            ink = [p for p in pixels if sum(abs(a - b) for a, b in zip(p, background)) > 90]
            if ink:
                blue = background[2] > background[0] + 60
                band.append((blue, min(sum(p) // 3 for p in ink)))
            elif band:
                rows.append(_row(band, y - 1))
                band = []
        if band:
            rows.append(_row(band, bottom))
        return rows

    def crop(self, box: tuple[int, int, int, int]) -> bytes:
        """The RGB bytes inside *box* (inclusive)."""
        left, top, right, bottom = box
        return b"".join(self.rgb[(y * self.width + left) * 3:(y * self.width + right + 1) * 3]
                        for y in range(top, bottom + 1))


@dataclass
class Desktop:
    """Xvfb, a session bus, xfce4-panel and dunst, running; see desktop()."""

    root: Path
    display: str
    env: dict[str, str]
    artefacts: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def session_address(self) -> str:
        """The private session bus."""
        return self.env["DBUS_SESSION_BUS_ADDRESS"]

    def start(self, argv: Sequence[str], log: str) -> subprocess.Popen[Any]:
        """Start a program on this desktop (stopped with the desktop)."""
        with open(self.root / f"{log}.log", "ab") as out:
            proc = subprocess.Popen(list(argv), env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)
        self.procs.append(proc)
        return proc

    def run(self, *argv: str) -> str:
        """Run a tool on this desktop to completion; its stdout."""
        done = subprocess.run(list(argv), env=self.env, capture_output=True, timeout=30,
                              check=False)
        assert done.returncode == 0, (argv, done.stderr.decode(errors="replace"))
        return done.stdout.decode(errors="replace")

    def screen(self) -> Screen:
        """The whole screen, as raw RGB."""
        raw = subprocess.run(["import", "-display", self.display, "-window", "root",
                              "-depth", "8", "rgb:-"], capture_output=True, timeout=30,
                             check=True, env=self.env).stdout
        assert len(raw) == WIDTH * HEIGHT * 3, len(raw)
        return Screen(WIDTH, HEIGHT, raw)

    def settled(self, pause: float = 0.3, timeout: float = 15.0) -> Screen:
        """The screen once two snapshots *pause* apart are the same."""
        last = self.screen()

        def same() -> Screen | None:
            nonlocal last
            time.sleep(pause)
            now = self.screen()
            stable, last = now.rgb == last.rgb, now
            return now if stable else None
        return wait_for(same, timeout, "the screen to settle")

    def screenshot(self, name: str, box: tuple[int, int, int, int] | None = None) -> Path:
        """Save the screen (or a box of it) as artefacts/NAME.png; its path."""
        path = self.artefacts / f"{name}.png"
        argv = ["import", "-display", self.display, "-window", "root"]
        if box is not None:
            left, top, right, bottom = box
            argv += ["-crop", f"{right - left + 1}x{bottom - top + 1}+{left}+{top}", "+repage"]
        subprocess.run([*argv, str(path)], check=True, timeout=30, env=self.env)
        return path

    def bus_names(self) -> list[str]:
        """The names on the session bus."""
        out = self.run("dbus-send", f"--bus={self.session_address}", "--print-reply",
                       "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                       "org.freedesktop.DBus.ListNames")
        return [line.split('"')[1] for line in out.splitlines() if "string" in line]

    def notifications(self) -> list[str]:
        """The summaries dunst has shown (its history plus what is on screen now)."""
        history = json.loads(self.run("dunstctl", "history"))
        shown = [n["summary"]["data"] for group in history["data"] for n in group]
        return shown

    def stop(self) -> None:
        """Stop everything started here, newest first, by pid."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start_xvfb(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{WIDTH}x{HEIGHT}x24",
             "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
            stdout=open(root / "xvfb.log", "wb"), stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd) as answer:
        number = answer.readline().strip()
    assert number, "Xvfb did not start"
    return proc, f":{number}"


@contextmanager
def desktop(root: Path, artefacts: Path) -> Iterator[Desktop]:
    """The running desktop; everything stopped afterwards."""
    artefacts.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    xfconf = home / ".config" / "xfce4" / "xfconf" / "xfce-perchannel-xml"
    xfconf.mkdir(parents=True)
    (xfconf / "xfce4-panel.xml").write_text(PANEL_XML)
    (home / ".config" / "dunst").mkdir(parents=True)
    (home / ".config" / "dunst" / "dunstrc").write_text(DUNSTRC)
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    xvfb, display = _start_xvfb(root)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "DISPLAY": display,
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_DATA_HOME": str(home / ".local" / "share"),
           "XDG_RUNTIME_DIR": str(runtime), "NO_AT_BRIDGE": "1", "LANG": "C.UTF-8"}
    desk = Desktop(root, display, env, artefacts, [xvfb])
    try:
        # The session bus runs with this desktop's environment: services it starts on
        # demand (xfconfd) must read the temp HOME, never this machine's.
        bus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--nosyslog", "--print-address=1",
             f"--address=unix:path={runtime}/bus"],
            env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        desk.procs.append(bus)
        assert bus.stdout is not None
        env["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().decode().strip()
        desk.start(["xfce4-panel", "--disable-wm-check"], "xfce4-panel")
        wait_for(lambda: "org.kde.StatusNotifierWatcher" in desk.bus_names(), 30,
                 "xfce4-panel's tray to own org.kde.StatusNotifierWatcher")
        desk.start(["dunst"], "dunst")
        wait_for(lambda: "org.freedesktop.Notifications" in desk.bus_names(), 15,
                 "dunst on the bus")
        yield desk
    finally:
        desk.stop()
