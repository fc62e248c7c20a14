"""A real QEMU guest holds the devices: vfiod on the real kernel, driven as a VM manager would.

QEMU (the host's qemu-system-x86_64, no guest OS: SeaBIOS finds nothing to boot) takes
the NIC, or both functions of the VGA+audio slot, through vfio-pci (passthrough.py).
The session's vfiod gets a config with the devices' ``on_release`` (then Reload) and
must show the guest (state ``guest``, Holder = that QEMU and its pid), stay calm while
QEMU resets the devices through VFIO (``system_reset``: a guest reboot), and apply
``on_release`` when QEMU quits or is killed. Each step is timed (timings.py): the
figures are printed at the end and kept in the results folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vfiod.host.real import RealHost

from .. import layout
from . import pci
from .daemon import GuestVfiod, device_changed_after, returned, run, wait_until
from .passthrough import PassthroughQemu
from .timings import record

NIC, VGA, HDA = layout.NIC, layout.VGA, layout.HDA
SLOT = [VGA, HDA]
REBOOTS = 3
#: Under TCG in TCG a step takes seconds; these bound a hang, they are not the figures.
STEP_TIMEOUT = 90.0
#: What QEMU's comm reads (the kernel keeps 15 characters of qemu-system-x86_64).
QEMU_COMM = "qemu-system-x86"


def config(on_release: dict[str, str]) -> str:
    """vfiod.toml with one [[device]] table per address."""
    return "".join(f'[[device]]\nmatch = "{address}"\non_release = "{action}"\n\n'
                   for address, action in on_release.items())


@pytest.fixture(scope="module")
def vfiod(guest_vfiod: GuestVfiod) -> Iterator[GuestVfiod]:
    """The session's vfiod; its config is emptied again after this module."""
    yield guest_vfiod
    configure(guest_vfiod, {})


def configure(vfiod: GuestVfiod, on_release: dict[str, str]) -> None:
    """Give vfiod these devices' on_release (the config file, then Reload)."""
    vfiod.config.write_text(config(on_release))
    reloaded = vfiod.call("Reload")
    assert reloaded.returncode == 0, reloaded.stderr


@pytest.fixture
def workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A short folder for QEMU's QMP socket (a unix socket path has 107 bytes at most);
    QEMU's output goes to the results folder afterwards."""
    path = Path(tempfile.mkdtemp(prefix="qemu-"))
    try:
        yield path
    finally:
        results = os.environ.get("VFIOD_VM_RESULTS")
        if results:
            for log in path.glob("*.log"):
                shutil.copy(log, Path(results) / f"{request.node.name}.{log.name}")
        shutil.rmtree(path, ignore_errors=True)


def bound(vfiod: GuestVfiod, address: str, *, force: bool = False) -> list[str]:
    """Bind through vfiod (the group goes along); the addresses it moved."""
    args = ["Bind", "sa{sv}", address, "1", "force", "b", "true"] if force \
        else ["Bind", "sa{sv}", address, "0"]
    moved: list[str] = returned(vfiod.call(*args))
    return moved


def timed(vfiod: GuestVfiod, action: Callable[[], object],
          until: Callable[[list[tuple[str, str, str]]], bool]) -> float:
    """Seconds from the start of *action* until the DeviceChanged signals satisfy *until*."""
    began = time.monotonic()
    took: dict[str, float] = {}

    def act() -> None:
        action()
        took["action"] = time.monotonic() - began

    _, after = run(device_changed_after(vfiod.address, act, until, STEP_TIMEOUT))
    return took["action"] + after


def all_in(addresses: list[str], state: str, drivers: list[str]) -> Callable[
        [list[tuple[str, str, str]]], bool]:
    """A DeviceChanged condition: every address has been seen in *state* on its driver."""
    return lambda seen: all((a, state, d) in seen for a, d in zip(addresses, drivers))


def held_by(vfiod: GuestVfiod, addresses: list[str], qemu: PassthroughQemu) -> None:
    """vfiod shows each function as the guest's, held by that QEMU."""
    status = vfiod.status()
    for address in addresses:
        assert status[address]["state"] == "guest", status[address]
        assert status[address]["holder"] == f"{QEMU_COMM} (pid {qemu.pid})", status[address]


def complaints(log: str) -> list[str]:
    """vfiod's warnings and errors in a piece of its log."""
    return [line for line in log.splitlines() if "[warning]" in line or "[error]" in line]


def reset_done(vfiod: GuestVfiod, address: str) -> int:
    """How many resets of *address* vfiod has logged as done."""
    return vfiod.log().count(f"reset {address}: done in ")


def reboots(vfiod: GuestVfiod, qemu: PassthroughQemu, addresses: list[str]) -> list[float]:
    """QMP system_reset REBOOTS times; each one's seconds. vfiod must stay calm."""
    logged = len(vfiod.log())
    times = []
    for _ in range(REBOOTS):
        before, hot_before = [qemu.resets(a) for a in addresses], qemu.hot_resets()
        began = time.monotonic()
        qemu.system_reset(STEP_TIMEOUT)
        times.append(time.monotonic() - began)
        after = [qemu.resets(a) for a in addresses]
        # Each function is reset, by a hot reset of its bus (the NIC has no FLR, the
        # slot's functions share their bus): the kernel's VFIO_DEVICE_PCI_HOT_RESET.
        # SeaBIOS may reset the machine once more itself on its way back up, so only
        # "at least one more" holds.
        assert all(b > a for a, b in zip(before, after)), \
            f"QEMU did not reset {addresses} through VFIO: {qemu.output()[-2000:]}"
        assert qemu.hot_resets() > hot_before, qemu.output()[-2000:]
        assert qemu.status() == "running"
        held_by(vfiod, addresses, qemu)
    assert complaints(vfiod.log()[logged:]) == []
    return times


def test_nic_guest_starts_reboots_and_quits_back_to_its_host_driver(
        host: RealHost, vfiod: GuestVfiod, workdir: Path) -> None:
    configure(vfiod, {NIC: "host"})
    assert bound(vfiod, NIC) == [NIC]
    qemu = PassthroughQemu([NIC], workdir)
    try:
        started = timed(vfiod, qemu.start, all_in([NIC], "guest", ["vfio-pci"]))
        held_by(vfiod, [NIC], qemu)
        cycles = reboots(vfiod, qemu, [NIC])
        back = timed(vfiod, qemu.quit, all_in([NIC], "host", ["e1000e"]))
    finally:
        qemu.stop()
    assert pci.driver_of(host, NIC) == "e1000e"
    assert vfiod.status()[NIC]["state"] == "host"
    record("NIC, on_release host", "start to guest", started)
    record("NIC, on_release host", "system_reset", cycles)
    record("NIC, on_release host", "quit to devices back", back)


def test_nic_guest_killed_returns_it_to_its_host_driver(
        host: RealHost, vfiod: GuestVfiod, workdir: Path) -> None:
    configure(vfiod, {NIC: "host"})
    assert bound(vfiod, NIC) == [NIC]
    qemu = PassthroughQemu([NIC], workdir)
    try:
        timed(vfiod, qemu.start, all_in([NIC], "guest", ["vfio-pci"]))
        back = timed(vfiod, qemu.kill, all_in([NIC], "host", ["e1000e"]))
    finally:
        qemu.stop()
    assert pci.driver_of(host, NIC) == "e1000e"
    record("NIC, on_release host", "SIGKILL to devices back", back)


def quit_or_kill_with_reset(host: RealHost, vfiod: GuestVfiod, workdir: Path,
                            end: str) -> float:
    """Guest on the NIC with on_release reset, ended by *end* ("quit" or "kill");
    seconds from the end until vfiod's reset is done."""
    configure(vfiod, {NIC: "reset"})
    assert bound(vfiod, NIC) == [NIC]
    qemu = PassthroughQemu([NIC], workdir)
    try:
        timed(vfiod, qemu.start, all_in([NIC], "guest", ["vfio-pci"]))
        resets = reset_done(vfiod, NIC)
        logged = len(vfiod.log())
        began = time.monotonic()
        qemu.quit() if end == "quit" else qemu.kill()
        wait_until(lambda: reset_done(vfiod, NIC) > resets, STEP_TIMEOUT,
                   f"vfiod to reset {NIC} on release")
        took = time.monotonic() - began
    finally:
        qemu.stop()
    assert f"{NIC}: its guest let go; on_release = reset" in vfiod.log()[logged:]
    assert complaints(vfiod.log()[logged:]) == []
    assert pci.driver_of(host, NIC) == "vfio-pci"
    wait_until(lambda: vfiod.status()[NIC]["state"] == "vfio", 10, f"{NIC} shown as vfio")
    return took


def test_nic_guest_quit_with_on_release_reset_resets_it_and_keeps_it_ready(
        host: RealHost, vfiod: GuestVfiod, workdir: Path) -> None:
    took = quit_or_kill_with_reset(host, vfiod, workdir, "quit")
    record("NIC, on_release reset", "quit to reset done", took)


def test_nic_guest_killed_with_on_release_reset_resets_it_and_keeps_it_ready(
        host: RealHost, vfiod: GuestVfiod, workdir: Path) -> None:
    took = quit_or_kill_with_reset(host, vfiod, workdir, "kill")
    record("NIC, on_release reset", "SIGKILL to reset done", took)


def test_second_qemu_is_refused_by_the_kernel_while_the_first_holds_the_group(
        host: RealHost, vfiod: GuestVfiod, workdir: Path) -> None:
    configure(vfiod, {NIC: "host"})
    assert bound(vfiod, NIC) == [NIC]
    group = pci.group_of(host, NIC)
    first = PassthroughQemu([NIC], workdir, "first")
    second = PassthroughQemu([NIC], workdir, "second")
    try:
        timed(vfiod, first.start, all_in([NIC], "guest", ["vfio-pci"]))
        logged = len(vfiod.log())
        refused = second.fails_to_start()
        assert f"failed to open /dev/vfio/{group}: Device or resource busy" in refused
        held_by(vfiod, [NIC], first)
        assert complaints(vfiod.log()[logged:]) == []
        timed(vfiod, first.quit, all_in([NIC], "host", ["e1000e"]))
    finally:
        second.stop()
        first.stop()
    assert pci.driver_of(host, NIC) == "e1000e"


def test_slot_guest_holds_both_functions_reboots_and_quits_back_to_their_drivers(
        host: RealHost, vfiod: GuestVfiod, workdir: Path) -> None:
    configure(vfiod, {VGA: "host", HDA: "host"})
    assert bound(vfiod, VGA, force=True) == SLOT  # the boot VGA carries the console
    qemu = PassthroughQemu(SLOT, workdir)
    try:
        started = timed(vfiod, qemu.start, all_in(SLOT, "guest", ["vfio-pci", "vfio-pci"]))
        held_by(vfiod, SLOT, qemu)
        cycles = reboots(vfiod, qemu, SLOT)
        back = timed(vfiod, qemu.quit, all_in(SLOT, "host", ["bochs-drm", "snd_hda_intel"]))
    finally:
        qemu.stop()
    assert [pci.driver_of(host, a) for a in SLOT] == ["bochs-drm", "snd_hda_intel"]
    assert [vfiod.status()[a]["state"] for a in SLOT] == ["host", "host"]
    record("VGA+audio slot, on_release host", "start to guest", started)
    record("VGA+audio slot, on_release host", "system_reset", cycles)
    record("VGA+audio slot, on_release host", "quit to devices back", back)


def test_slot_guest_killed_returns_both_functions_to_their_drivers(
        host: RealHost, vfiod: GuestVfiod, workdir: Path) -> None:
    configure(vfiod, {VGA: "host", HDA: "host"})
    assert bound(vfiod, VGA, force=True) == SLOT
    qemu = PassthroughQemu(SLOT, workdir)
    try:
        timed(vfiod, qemu.start, all_in(SLOT, "guest", ["vfio-pci", "vfio-pci"]))
        back = timed(vfiod, qemu.kill, all_in(SLOT, "host", ["bochs-drm", "snd_hda_intel"]))
    finally:
        qemu.stop()
    assert [pci.driver_of(host, a) for a in SLOT] == ["bochs-drm", "snd_hda_intel"]
    record("VGA+audio slot, on_release host", "SIGKILL to devices back", back)
