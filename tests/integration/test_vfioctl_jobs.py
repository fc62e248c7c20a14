"""vfioctl bind/unbind/reset as jobs: the live line on a terminal (a pty), plain lines into
a pipe, Ctrl-C leaving the job running, --no-wait, ``vfioctl jobs``."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import threading
import time
from collections.abc import Callable

from vfiod.sim.holder import Holder, spawn_holder

from .helpers import Vfiod, sim_driver, wait_for
from .vfioctl_helpers import vfioctl, vfioctl_argv

ONBOARD_AUDIO = "0000:00:1b.0"  # snd_hda_intel; /dev/snd/pcmC0D0p is its playback node


class Terminal:
    """vfioctl on a pseudo-terminal: what a user at a terminal sees, and Ctrl-C."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
        env.pop("VFIOCTL_DEBUG", None)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: vfioctl, with the pty as its terminal
            os.execvpe(argv[0], argv, env)
        self.output = b""
        self.status: int | None = None

    def read_until(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Read until *predicate* holds for the text so far, or the program exits."""
        deadline = time.monotonic() + timeout
        while not predicate(self.text) and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the program exited and closed the terminal
                    break
                if not chunk:
                    break
                self.output += chunk
        return self.text

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def ctrl_c(self) -> None:
        """Type Ctrl-C: the terminal sends SIGINT to vfioctl."""
        os.write(self.fd, b"\x03")

    def wait(self, timeout: float = 20) -> int:
        """Read to the end; the exit status."""
        self.read_until(lambda _text: False, timeout)
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
            else:
                time.sleep(0.05)
        os.close(self.fd)
        return self.status


def player(daemon: Vfiod) -> Holder:
    """A program playing sound through the onboard audio (a soft in-use guard)."""
    return spawn_holder(daemon.sim_root, ["/dev/snd/pcmC0D0p"], comm="aplay")


def let_go_after(holder: Holder, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, holder.close)
    timer.start()
    return timer


def test_bind_on_a_terminal_shows_the_waiting_line_then_the_outcome(vfiod: Vfiod) -> None:
    with player(vfiod) as aplay:
        let_go_after(aplay, 10)
        began = time.monotonic()
        term = Terminal(vfioctl_argv(vfiod.address, "bind", "--wait", "60", ONBOARD_AUDIO))
        code = term.wait(timeout=40)
        took = time.monotonic() - began
    text = term.text
    assert code == 0, text
    waiting = (f"checking that the host does not use {ONBOARD_AUDIO}, waiting for aplay "
               f"(pid {aplay.pid}) to release {ONBOARD_AUDIO}, ")
    # One line redrawn in place: carriage return, erase, the text with its seconds.
    seconds = [int(s) for s in re.findall(re.escape("\r\x1b[K" + waiting) + r"(\d+) s", text)]
    assert seconds and seconds == sorted(seconds) and max(seconds) >= 8, text
    outcome = text.rsplit("\r\x1b[K", 1)[-1]
    assert re.search(rf"{ONBOARD_AUDIO} .* snd_hda_intel -> vfio-pci", outcome), text
    assert 10 <= took < 30
    assert sim_driver(vfiod.sim_root, ONBOARD_AUDIO) == "vfio-pci"


def test_ctrl_c_leaves_the_job_running_and_says_how_to_follow_it(vfiod: Vfiod) -> None:
    with player(vfiod) as aplay:
        term = Terminal(vfioctl_argv(vfiod.address, "bind", "--wait", "60", ONBOARD_AUDIO))
        term.read_until(lambda text: f"aplay (pid {aplay.pid})" in text, 15)
        term.ctrl_c()
        code = term.wait()
        listed = vfioctl(vfiod.address, "jobs")
        aplay.close()
    assert code == 130, term.text
    assert term.text.endswith(
        f"\r\x1b[Kvfioctl: {ONBOARD_AUDIO}: interrupted; the bind goes on in vfiod as job "
        "/org/vfiod1/job/1: follow it with `vfioctl jobs` or `vfioctl monitor`\r\n"), \
        repr(term.text)
    assert listed.stdout.startswith(f"/org/vfiod1/job/1  bind {ONBOARD_AUDIO}  checking that "
                                    f"the host does not use {ONBOARD_AUDIO}, waiting for "
                                    f"aplay (pid {aplay.pid}) to release {ONBOARD_AUDIO}, ")
    # The player stopped: the job it left running finishes the bind.
    wait_for(lambda: sim_driver(vfiod.sim_root, ONBOARD_AUDIO) == "vfio-pci", 10,
             "the job to finish the bind")
    wait_for(lambda: vfiod.status()[ONBOARD_AUDIO]["state"] == "vfio", 10, "state vfio")
    assert vfioctl(vfiod.address, "jobs").stdout == "no running jobs\n"


def test_into_a_pipe_a_lasting_wait_is_one_plain_line_on_stderr(vfiod: Vfiod) -> None:
    with player(vfiod) as aplay:
        let_go_after(aplay, 3)
        result = vfioctl(vfiod.address, "bind", "--wait", "60", ONBOARD_AUDIO)
    assert result.returncode == 0, result.stderr
    # One line for the wait (a loaded machine may add one for a slow step).
    first, *_ = result.stderr.splitlines()
    assert re.fullmatch(re.escape(f"checking that the host does not use {ONBOARD_AUDIO}, "
                                  f"waiting for aplay (pid {aplay.pid}) to release "
                                  f"{ONBOARD_AUDIO} (") + r"[12] s\)", first), result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert re.search(rf"^{ONBOARD_AUDIO} .* snd_hda_intel -> vfio-pci$", result.stdout), \
        result.stdout


def test_no_wait_prints_the_job_path_and_returns(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", "--no-wait", ONBOARD_AUDIO)
    assert (result.returncode, result.stdout, result.stderr) == (0, "/org/vfiod1/job/1\n", "")
    wait_for(lambda: sim_driver(vfiod.sim_root, ONBOARD_AUDIO) == "vfio-pci", 10, "the bind")


def test_a_job_that_waited_in_vain_exits_with_the_in_use_code(vfiod: Vfiod) -> None:
    with player(vfiod) as aplay:
        result = vfioctl(vfiod.address, "bind", "--wait", "1", ONBOARD_AUDIO)
    assert result.returncode == 4
    assert result.stderr.splitlines()[-1] == (
        f"vfioctl: {ONBOARD_AUDIO}: refusing to bind it to vfio-pci: sound device "
        f"/dev/snd/pcmC0D0p is held open by aplay (pid {aplay.pid}) (use force to override) "
        "(waited 1 s for it to be let go)")
