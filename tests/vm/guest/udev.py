"""systemd-udevd in the test guest: settle its queue, stop it, start it again.

RealHost.open_events() reads udevd's processed events while udevd runs and the
kernel's raw ones otherwise; the uevent tests look at both.
"""

from __future__ import annotations

import os
import subprocess

from vfiod.host.real import RealHost, udevd_running

from ..marker import GUEST_MARKER, in_test_guest
from .pci import wait_until

if not in_test_guest():  # stops and starts the guest's udevd: never on a host
    raise RuntimeError(f"tests.vm.guest.udev runs only in the test guest ({GUEST_MARKER})")

UDEVD = "/lib/systemd/systemd-udevd"
CONTROL = "/run/udev/control"


def settle() -> None:
    """Wait until udevd has handled every event the kernel sent so far."""
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=True, timeout=60)


def alive() -> bool:
    """True when udevd answers on its control socket."""
    return subprocess.run(["udevadm", "control", "--ping", "--timeout=2"],
                          capture_output=True, timeout=30).returncode == 0


def stop() -> None:
    """Stop udevd and remove its control socket, which it leaves behind.

    RealHost takes the socket for a running udevd (under systemd the socket unit keeps
    it even while udevd is stopped), so it must go for open_events() to fall back to
    the kernel's netlink group.
    """
    subprocess.run(["udevadm", "control", "--exit"], check=True, timeout=60)
    assert wait_until(lambda: not alive(), timeout=10), "systemd-udevd did not exit"
    if os.path.lexists(CONTROL):
        os.unlink(CONTROL)
    assert not udevd_running(RealHost())


def start() -> None:
    """Start udevd (it daemonizes) and wait for its control socket."""
    subprocess.run([UDEVD, "--daemon"], check=True, timeout=60)
    assert wait_until(lambda: udevd_running(RealHost()), timeout=10), "systemd-udevd did not start"
