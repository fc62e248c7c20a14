"""A real passthrough guest: QEMU itself, started in the test guest with vfio-pci devices.

``PassthroughQemu([addresses], workdir)`` runs the host's ``qemu-system-x86_64`` (seen
through the read-only host root) the way a VM manager would: ``-machine q35
-nodefaults -display none -m 64M -accel tcg``, one ``-device vfio-pci,host=ADDR`` per
function and a QMP socket. There is no guest OS: QEMU starts paused (``-S``, as libvirt
starts it) and ``cont`` lets SeaBIOS (the qemu packages' bios-256k.bin) run, find no
boot disk and sit in its firmware. QEMU opens the group, attaches it to a container,
maps the guest's memory for DMA and takes each device fd, like any VFIO guest; its
``system_reset`` resets the devices through VFIO itself. Test guest only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ..marker import GUEST_MARKER, in_test_guest
from .qmp import Qmp

if not in_test_guest():  # it takes PCI devices for a guest: never on a host
    raise RuntimeError(f"tests.vm.guest.passthrough runs only in the test guest ({GUEST_MARKER})")

QEMU = "qemu-system-x86_64"
#: QEMU's own trace events (log backend, to its stderr) for each reset it does through
#: VFIO: "vfio_pci_reset  (ADDR)", then the method ("ADDR PCI PM Reset", "ADDR hot
#: reset: Success", "ADDR FLR/VFIO_DEVICE_RESET").
RESET_TRACES = ("vfio_pci_reset", "vfio_pci_reset_pm", "vfio_pci_reset_flr",
                "vfio_pci_hot_reset_result")
#: QEMU's own start under TCG in TCG: a few seconds; more when the machine is loaded.
START_TIMEOUT = 120.0


class QemuFailed(Exception):
    """QEMU exited before its QMP socket answered; the message is what it printed."""


class PassthroughQemu:
    """One QEMU process with the given functions passed through; stop() always."""

    def __init__(self, addresses: list[str], workdir: Path, name: str = "guest") -> None:
        self.addresses = addresses
        self.qmp_path = str(workdir / f"{name}.qmp")
        self.log_path = workdir / f"{name}.log"
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: Qmp | None = None

    def command(self) -> list[str]:
        """QEMU's command line."""
        cmd = [QEMU, "-name", self.name, "-machine", "q35", "-accel", "tcg",
               "-nodefaults", "-no-user-config", "-display", "none", "-m", "64M",
               "-S", "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        for event in RESET_TRACES:
            cmd += ["-trace", event]
        for address in self.addresses:
            # rombar=0: the option ROM would only cost SeaBIOS time under TCG in TCG.
            cmd += ["-device", f"vfio-pci,host={address},rombar=0"]
        return cmd

    @property
    def pid(self) -> int:
        """QEMU's pid."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> PassthroughQemu:
        """Start QEMU, connect to QMP and let the firmware run (QemuFailed if it exits)."""
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while self.qmp is None:
            if self.proc.poll() is not None:
                raise QemuFailed(self.output())
            if time.monotonic() > deadline:
                self.kill()
                raise QemuFailed(f"no QMP socket within {START_TIMEOUT:g} s: {self.output()}")
            try:
                self.qmp = Qmp(self.qmp_path)
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.05)
        self.qmp.command("cont")
        return self

    def fails_to_start(self, timeout: float = START_TIMEOUT) -> str:
        """Start QEMU expecting it to exit on its own; what it printed."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"QEMU kept running: {self.output()}") from None
        assert status != 0, f"QEMU exited with 0: {self.output()}"
        return self.output()

    def status(self) -> str:
        """QMP query-status: "running", "prelaunch", ..."""
        assert self.qmp is not None
        return str(self.qmp.command("query-status")["status"])

    def system_reset(self, timeout: float = 60.0) -> None:
        """QMP system_reset (a guest reboot), returning once QEMU reports the RESET."""
        assert self.qmp is not None
        self.qmp.command("system_reset")
        self.qmp.wait_event("RESET", timeout)

    def quit(self, timeout: float = 60.0) -> int:
        """QMP quit, as a VM manager ends a guest; QEMU's exit status."""
        assert self.qmp is not None and self.proc is not None
        self.qmp.command("quit")
        status = self.proc.wait(timeout)
        self._close_qmp()
        return status

    def kill(self) -> None:
        """SIGKILL QEMU by its pid (a crash: nothing of QEMU's own clean-up runs)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_qmp()

    def stop(self) -> None:
        """Whatever state it is in, QEMU is gone afterwards (for a finally)."""
        self.kill()

    def resets(self, address: str) -> int:
        """How many resets of *address* QEMU has begun through VFIO (its trace)."""
        return sum(1 for line in self.output().splitlines()
                   if "vfio_pci_reset " in line and f"({address})" in line)

    def hot_resets(self) -> int:
        """How many bus hot resets (VFIO_DEVICE_PCI_HOT_RESET) QEMU reports as done."""
        return sum(1 for line in self.output().splitlines()
                   if line.startswith("vfio_pci_hot_reset_result")
                   and line.endswith("hot reset: Success"))

    def output(self) -> str:
        """What QEMU printed."""
        try:
            return self.log_path.read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def _close_qmp(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
