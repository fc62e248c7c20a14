"""vfiod killed (SIGKILL) while it binds the GPU-like slot, then started again.

A slot Bind moves two functions with three writes each. The daemon is killed at
different points of that (as soon as the test sees the VGA's override set, the VGA on
vfio-pci, the HDA off its driver) and restarted with the same state dir. Then every
member of the group must be on one side (each on vfio-pci, or each on the driver it
had, with no override left behind), and Unbind and Bind must work.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from vfiod.host.real import RealHost

from .. import layout
from . import pci
from .daemon import BUS_NAME, MANAGER, MANAGER_IFACE, GuestVfiod, returned

VGA, HDA = layout.VGA, layout.HDA
SLOT = [VGA, HDA]
ON_HOST = ["bochs-drm", "snd_hda_intel"]
ON_VFIO = ["vfio-pci", "vfio-pci"]
POLL = 0.002

#: When to kill the daemon, judged from what sysfs shows while the Bind runs.
KILL_POINTS: dict[str, Callable[[RealHost], bool]] = {
    "once the VGA's override is vfio-pci": lambda host: pci.override_of(host, VGA) is not None,
    "once the VGA is on vfio-pci": lambda host: pci.driver_of(host, VGA) == "vfio-pci",
    "once the HDA left snd_hda_intel":
        lambda host: pci.driver_of(host, HDA) != "snd_hda_intel",
}


def slot_state(host: RealHost) -> str:
    """The slot's drivers and overrides, for messages."""
    return ", ".join(f"{a} on {pci.driver_of(host, a)} (override {pci.override_of(host, a)})"
                     for a in SLOT)


def bind_call(vfiod: GuestVfiod) -> subprocess.Popen[str]:
    """Start `busctl call ... Bind` of the slot (forced past the boot-VGA guard)."""
    return subprocess.Popen(
        ["busctl", f"--address={vfiod.address}", "call", BUS_NAME, MANAGER, MANAGER_IFACE,
         "Bind", "sa{sv}", VGA, "1", "force", "b", "true"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_daemon_killed_during_a_slot_bind_leaves_the_group_on_one_side_once_restarted(
        host: RealHost, guest_vfiod: GuestVfiod, point: str) -> None:
    pci.load_vfio_pci(host)  # the kill should land in the moves, not in modprobe
    assert [pci.driver_of(host, a) for a in SLOT] == ON_HOST
    reached = KILL_POINTS[point]
    call = bind_call(guest_vfiod)
    try:
        deadline = time.monotonic() + 60
        while not reached(host):
            assert time.monotonic() < deadline, f"the Bind never got {point}"
            time.sleep(POLL)
        guest_vfiod.kill()
        at_kill = slot_state(host)
        print(f"killed {point}: {at_kill}")  # shown with -s: which moment each point hit
    finally:
        call.communicate(timeout=60)

    guest_vfiod.start()
    drivers = [pci.driver_of(host, a) for a in SLOT]
    overrides = [pci.override_of(host, a) for a in SLOT]
    where = f"killed {point} ({at_kill}); after the restart: {slot_state(host)}"
    assert (drivers, overrides) in ((ON_VFIO, ["vfio-pci"] * 2), (ON_HOST, [None, None])), where

    # Unbind, then Bind: an Unbind of a group the recovery put back has nothing to move.
    unbound = returned(guest_vfiod.call("Unbind", "sa{sv}", VGA, "0"))
    assert unbound == (SLOT if drivers == ON_VFIO else []), where
    assert returned(guest_vfiod.call("Bind", "sa{sv}", VGA, "1", "force", "b", "true")) \
        == SLOT, where
    assert [pci.driver_of(host, a) for a in SLOT] == ON_VFIO
