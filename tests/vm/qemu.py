"""Boot the test guest in QEMU, follow its job's output, and always stop QEMU.

The machine (kernel-facts.md, "A VM that has a real IOMMU"): TCG (KVM does not work on
this kind of machine), q35 with an emulated Intel IOMMU, the PCI layout of layout.py,
and two virtio-9p shares: this machine's / read-only (the guest's root) and a run's
results folder read-write (the job, its output and its exit code).
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vfiod.privatebus import die_with_parent

from . import layout
from .marker import GUEST_MARKER

QEMU = "qemu-system-x86_64"
#: The kernel's limit is 2048 bytes; stay far below it.
MAX_CMDLINE = 512
POLL_SECONDS = 0.25


def kernel_cmdline() -> str:
    """The guest kernel's command line: serial console, the IOMMU, the marker, our init."""
    return " ".join((
        "console=ttyS0", "intel_iommu=on", GUEST_MARKER, "rdinit=/init",
        # A dead init panics; panic=-1 reboots at once and -no-reboot turns that into
        # QEMU exiting, so a broken guest never sits until the timeout.
        "panic=-1",
    ))


def _escape(value: str) -> str:
    """QEMU option values double their commas."""
    return value.replace(",", ",,")


def qemu_command(kernel_image: Path, initramfs: Path, results: Path, serial_log: Path,
                 qemu: str = QEMU, disk_image: Path | None = None) -> list[str]:
    """The full QEMU command line for one guest run (*disk_image*: the AHCI's disk)."""
    cmdline = kernel_cmdline()
    if len(cmdline) > MAX_CMDLINE:
        raise ValueError(f"kernel command line too long ({len(cmdline)} bytes)")
    return [
        qemu, "-name", "vfiod-test-guest", "-no-user-config", "-nodefaults",
        "-accel", "tcg,thread=multi",
        "-machine", "q35,kernel-irqchip=split", "-cpu", "max", "-smp", "2", "-m", "2G",
        "-no-reboot", "-display", "none",
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        "-chardev", f"file,id=ser0,path={_escape(str(serial_log))}", "-serial", "chardev:ser0",
        "-kernel", str(kernel_image), "-initrd", str(initramfs), "-append", cmdline,
        *layout.device_options(disk_image),
        "-fsdev", "local,id=fsroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", (f"virtio-9p-pci,fsdev=fsroot,mount_tag={layout.HOSTROOT_TAG},"
                    f"bus=pcie.0,addr=0x{layout.HOSTROOT_SLOT:x}"),
        "-fsdev", f"local,id=fsres,path={_escape(str(results))},security_model=none",
        "-device", (f"virtio-9p-pci,fsdev=fsres,mount_tag={layout.RESULTS_TAG},"
                    f"bus=pcie.0,addr=0x{layout.RESULTS_SLOT:x}"),
    ]


@dataclass
class GuestResult:
    """What came back from one boot."""

    exit_code: int | None  # the job's; None when the guest never recorded one
    seconds: float  # QEMU start to exit
    timed_out: bool = False
    interrupted: bool = False
    qemu_status: int | None = None
    stages: dict[str, float] = field(default_factory=dict)  # guest uptime at each stage
    init_error: str = ""  # what init.sh gave up on, if it did
    udevd: str = ""  # "yes" / "no": whether systemd-udevd ran in the guest


def boot(command: list[str], results: Path, qemu_log: Path, timeout: float,
         out: TextIO = sys.stdout,
         on_start: Callable[[subprocess.Popen[bytes]], None] | None = None) -> GuestResult:
    """Run QEMU until the guest powers off or *timeout* passes; stream the job's output.

    QEMU is killed by its own pid on timeout, on Ctrl-C and on any error here.
    """
    output = results / "output.log"
    started = time.monotonic()
    result = GuestResult(exit_code=None, seconds=0.0)
    with open(qemu_log, "wb") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                preexec_fn=functools.partial(die_with_parent, signal.SIGKILL))
    if on_start is not None:
        on_start(proc)
    offset = 0
    try:
        while True:
            offset = _follow(output, offset, out)
            if proc.poll() is not None:
                break
            if time.monotonic() - started > timeout:
                result.timed_out = True
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if proc.poll() is None:
            proc.kill()
        result.qemu_status = proc.wait()
    result.seconds = time.monotonic() - started
    _follow(output, offset, out)
    result.exit_code = _read_int(results / "exit_code")
    result.stages = _read_stages(results / "stages")
    result.init_error = _read(results / "init-error")
    result.udevd = _read(results / "udevd")
    return result


def _follow(path: Path, offset: int, out: TextIO) -> int:
    """Copy what was appended to *path* since *offset* to *out*; the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    if data:
        out.write(data.decode(errors="replace"))
        out.flush()
    return offset + len(data)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _read_int(path: Path) -> int | None:
    try:
        return int(_read(path))
    except ValueError:
        return None


def _read_stages(path: Path) -> dict[str, float]:
    """``name uptime`` lines, as init.sh writes them."""
    stages: dict[str, float] = {}
    for line in _read(path).splitlines():
        name, _, value = line.partition(" ")
        try:
            stages[name] = float(value)
        except ValueError:
            continue
    return stages


def serial_tail(serial_log: Path, lines: int = 60) -> str:
    """The last lines of the guest's serial console (or of any log)."""
    return "\n".join(_read(serial_log).splitlines()[-lines:])


def qemu_usable(qemu: str = QEMU) -> str | None:
    """None when QEMU can be started here, else why not."""
    if shutil.which(qemu) is None:
        return f"{qemu} is not installed (Debian: qemu-system-x86)"
    try:
        proc = subprocess.run([qemu, "-device", "help"], capture_output=True, text=True,
                              timeout=30, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{qemu} does not start: {exc}"
    if proc.returncode != 0:
        return f"{qemu} does not start: {proc.stderr.strip()[:200]}"
    missing = [d for d in ("intel-iommu", "virtio-9p-pci", "pcie-root-port", "e1000e",
                           "qemu-xhci", "virtio-gpu-pci", "ich9-ahci", "intel-hda")
               if f'"{d}"' not in proc.stdout]
    if missing:
        return f"{qemu} lacks the devices {', '.join(missing)}"
    return None
