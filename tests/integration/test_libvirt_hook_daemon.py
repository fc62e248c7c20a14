"""The installed libvirt hook, called as libvirtd calls it, against a running vfiod.

The hook is installed the way a user installs it (``install_hook``: the system's
python3 -I, the real busctl) and run with the seed's domain XML on stdin and libvirt's
argv (domain, operation, sub-op, extra). Its "system bus" is the test session's private
bus (busctl --system follows DBUS_SYSTEM_BUS_ADDRESS); vfiod runs on the simulated
seed-x99 with an on_release per hostdev.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vfiod.libvirt_hook import PROBE_TIMEOUT, install_hook
from vfiod.privatebus import PrivateBus
from vfiod.sim.holder import spawn_holder

from .helpers import Vfiod, sim_driver, wait_for

SEED_XML = (Path(__file__).resolve().parents[1] / "data" / "seed-domain.xml").read_text()
USB, AUDIO, GPU, HDMI, SPSR, SSATA = ("0000:11:00.0", "0000:00:1b.0", "0000:06:00.0",
                                      "0000:06:00.1", "0000:00:11.0", "0000:00:11.4")
HOSTDEVS = [USB, AUDIO, GPU, HDMI, SPSR, SSATA]
#: What each hostdev's config says to do when its guest lets go.
ON_RELEASE = {USB: "keep", AUDIO: "host", GPU: "host", HDMI: "host", SPSR: "host",
              SSATA: "host"}
#: Where seed-x99 has them at boot ("" is no driver).
BOOT_DRIVERS = {USB: "xhci_hcd", AUDIO: "snd_hda_intel", GPU: "nvidia",
                HDMI: "snd_hda_intel", SPSR: "", SSATA: "ahci"}
#: libvirtd waits for its hooks without a limit: the hook must bound itself.
PATIENCE = 30.0


def config() -> str:
    return "".join(f'[[device]]\nmatch = "{a}"\non_release = "{action}"\n\n'
                   for a, action in ON_RELEASE.items())


@pytest.fixture
def hook(tmp_path: Path) -> Path:
    """The hook as `vfioctl libvirt-hook install` writes it (defaults), under tmp_path."""
    return install_hook(tmp_path / "root")


def libvirt_calls(hook: Path, bus: PrivateBus, operation: str, sub: str,
                  xml: str = SEED_XML) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the hook as libvirtd does: argv domain, operation, sub-op, extra; XML on stdin.
    The hook's result and the seconds it took."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VFIOD_", "PYTHON", "VIRTUAL_ENV"))}
    env["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
    began = time.monotonic()
    proc = subprocess.run([str(hook), "Windows", operation, sub, "-"], input=xml,
                          capture_output=True, text=True, env=env, timeout=PATIENCE * 4)
    return proc, time.monotonic() - began


def test_the_hook_runs_on_the_system_python_isolated(hook: Path) -> None:
    assert hook.read_text().splitlines()[0] == "#!/usr/bin/python3 -I"


def test_seed_domain_through_prepare_started_and_release(
        make_vfiod: Callable[..., Vfiod], private_bus: PrivateBus, hook: Path) -> None:
    daemon = make_vfiod(config=config()).start()

    prepared, took = libvirt_calls(hook, private_bus, "prepare", "begin")
    assert prepared.returncode == 0, prepared.stderr
    assert took < PATIENCE
    status = daemon.status()
    for address in HOSTDEVS:
        assert sim_driver(daemon.sim_root, address) == "vfio-pci", address
        assert status[address]["state"] == "vfio", status[address]
        assert daemon.get_property(address, "Healthy") is True, address
    assert len(prepared.stderr.splitlines()) == len(HOSTDEVS)

    for operation in (("start", "begin"), ("started", "begin")):
        called, _ = libvirt_calls(hook, private_bus, *operation)
        assert (called.returncode, called.stderr) == (0, "")

    # The guest: one process holding every group of the domain, like QEMU.
    nodes = sorted({f"/dev/vfio/{status[a]['group']}" for a in HOSTDEVS})
    with spawn_holder(daemon.sim_root, nodes, comm="qemu-system-x86") as guest:
        wait_for(lambda: all(daemon.status()[a]["state"] == "guest" for a in HOSTDEVS),
                 10, "every hostdev held by the guest")
        assert daemon.status()[GPU]["holder"] == f"qemu-system-x86 (pid {guest.pid})"

    # QEMU is gone when libvirtd calls stopped and release; vfiod has seen it go.
    expected = {a: ("vfio-pci" if ON_RELEASE[a] == "keep" else BOOT_DRIVERS[a])
                for a in HOSTDEVS}
    wait_for(lambda: {a: sim_driver(daemon.sim_root, a) for a in HOSTDEVS} == expected,
             20, f"on_release applied: {expected}")
    released, took = libvirt_calls(hook, private_bus, "release", "end")
    assert released.returncode == 0, released.stderr
    assert took < PATIENCE
    assert f"vfiod-hook: Windows: released {USB} (now vfio)" in released.stderr
    assert f"vfiod-hook: Windows: released {AUDIO} (now host)" in released.stderr
    assert re.findall(r"(?:bind|reset) 0000:\S+ failed.*", daemon.log()) == []


def test_prepare_fails_in_one_line_when_vfiod_does_not_answer(
        vfiod: Vfiod, private_bus: PrivateBus, hook: Path) -> None:
    assert vfiod.proc is not None
    os.kill(vfiod.proc.pid, signal.SIGSTOP)  # it owns org.vfiod1 and answers nothing
    try:
        prepared, took = libvirt_calls(hook, private_bus, "prepare", "begin")
    finally:
        os.kill(vfiod.proc.pid, signal.SIGCONT)
    assert prepared.returncode == 1
    assert prepared.stderr.splitlines() == [
        f"vfiod-hook: Windows: not starting: vfiod (org.vfiod1 on the system bus) did not "
        f"answer within {PROBE_TIMEOUT} s"]
    assert took < PROBE_TIMEOUT + 5
    assert all(sim_driver(vfiod.sim_root, a) != "vfio-pci" for a in HOSTDEVS)


def test_prepare_fails_in_one_line_when_vfiod_is_not_running(
        private_bus: PrivateBus, hook: Path) -> None:
    prepared, took = libvirt_calls(hook, private_bus, "prepare", "begin")
    assert prepared.returncode == 1
    (line,) = prepared.stderr.splitlines()
    assert line.startswith("vfiod-hook: Windows: not starting: vfiod is not there: ")
    assert "org.vfiod1" in line
    assert took < PROBE_TIMEOUT


def test_release_says_so_in_one_line_when_vfiod_does_not_answer(
        vfiod: Vfiod, private_bus: PrivateBus, hook: Path) -> None:
    assert vfiod.proc is not None
    os.kill(vfiod.proc.pid, signal.SIGSTOP)
    try:
        released, took = libvirt_calls(hook, private_bus, "release", "end")
    finally:
        os.kill(vfiod.proc.pid, signal.SIGCONT)
    assert released.returncode == 0  # libvirt cannot undo a release; it only logs
    (line,) = released.stderr.splitlines()
    assert line.endswith(f"did not answer within {PROBE_TIMEOUT} s")
    assert took < PROBE_TIMEOUT + 5


#: The same domain with on_release "reset" on the GPU slot and the USB controller: they
#: stay on vfio-pci, reset (the GPU and its HDMI audio through VFIO's hot reset).
ON_RELEASE_RESET = {USB: "reset", AUDIO: "host", GPU: "reset", HDMI: "reset", SPSR: "host",
                    SSATA: "host"}


def test_seed_domain_release_resets_the_devices_configured_to_reset(
        make_vfiod: Callable[..., Vfiod], private_bus: PrivateBus, hook: Path) -> None:
    daemon = make_vfiod(config="".join(
        f'[[device]]\nmatch = "{a}"\non_release = "{action}"\n\n'
        for a, action in ON_RELEASE_RESET.items())).start()
    prepared, _ = libvirt_calls(hook, private_bus, "prepare", "begin")
    assert prepared.returncode == 0, prepared.stderr
    status = daemon.status()
    nodes = sorted({f"/dev/vfio/{status[a]['group']}" for a in HOSTDEVS})
    with spawn_holder(daemon.sim_root, nodes, comm="qemu-system-x86"):
        wait_for(lambda: all(daemon.status()[a]["state"] == "guest" for a in HOSTDEVS),
                 10, "every hostdev held by the guest")

    resets = [a for a, action in ON_RELEASE_RESET.items() if action == "reset"]
    wait_for(lambda: all(daemon.get_property(a, "ResetCount") >= 1 for a in resets), 20,
             f"on_release reset of {resets}")
    released, _ = libvirt_calls(hook, private_bus, "release", "end")
    assert released.returncode == 0, released.stderr
    for address in HOSTDEVS:
        if ON_RELEASE_RESET[address] == "reset":
            assert sim_driver(daemon.sim_root, address) == "vfio-pci", address
            assert daemon.get_property(address, "LastResetOutcome") == "healthy", address
            assert f"released {address} (now vfio)" in released.stderr
        else:
            wait_for(lambda a=address: sim_driver(daemon.sim_root, a) == BOOT_DRIVERS[a],
                     20, f"{address} back on {BOOT_DRIVERS[address] or 'no driver'}")
        # The guest run is in every hostdev's record, ended.
        [(start, end, how)] = daemon.get_property(address, "GuestRuns")
        assert end >= start > 0 and how != "running", (address, how)
    assert daemon.get_property(GPU, "LastResetMethod") == "bus"
    assert re.findall(r"(?:bind|reset) 0000:\S+ failed.*", daemon.log()) == []


def test_prepare_refuses_a_domain_missing_a_group_mate_and_moves_nothing(
        make_vfiod: Callable[..., Vfiod], private_bus: PrivateBus, hook: Path) -> None:
    daemon = make_vfiod(config=config()).start()
    without_hdmi = re.sub(r"<hostdev[^>]*>\s*<source>\s*<address domain='0x0000' "
                          r"bus='0x06' slot='0x00' function='0x1'/>.*?</hostdev>", "",
                          SEED_XML, flags=re.S)
    assert without_hdmi != SEED_XML

    prepared, _took = libvirt_calls(hook, private_bus, "prepare", "begin", xml=without_hdmi)
    assert prepared.returncode == 1
    assert prepared.stderr.splitlines() == [
        line for line in prepared.stderr.splitlines() if "not starting" in line]
    assert f"vfiod-hook: Windows: not starting: {GPU}: IOMMU group 31 also holds {HDMI}" \
        in prepared.stderr
    for address in HOSTDEVS:
        assert sim_driver(daemon.sim_root, address) == (BOOT_DRIVERS[address] or ""), address
