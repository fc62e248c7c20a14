"""``make demo``: vfiod on the simulated seed-x99 workstation, driven by vfioctl.

Starts a private system-like bus and vfiod on a simulated host in a temporary
directory, then runs real ``vfioctl`` commands as subprocesses and shows each as a user
would see it in a terminal: the command line after "$ ", then vfioctl's own output.
Every step checks that it did what it shows (exit status, output, and the simulated
sysfs tree); the demo exits 1 at the first one that did not. The daemon, the bus and
the temporary directory are removed afterwards, also on Ctrl-C, SIGTERM or failure.
Nothing here touches this machine's /sys.

It ships with vfiod and runs from an installed copy as from a checkout
(``python -m vfiod.demo``): the daemon and vfioctl it starts are that same copy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from vfiod.host import paths
from vfiod.host.real import RealHost
from vfiod.privatebus import (
    PrivateBus,
    PrivateBusError,
    same_vfiod_env,
    start_vfiod,
    stop_vfiod,
)

PROFILE = "seed-x99"
GPU = "0000:06:00.0"
GPU_AUDIO = "0000:06:00.1"
ROOT_DISK_CONTROLLER = "0000:00:1f.2"


class DemoFailed(Exception):
    """A step did not do what the demo shows."""


@dataclass
class Step:
    """One vfioctl command, what it says, and how to tell that it worked."""

    args: list[str]
    says: str  # one line of narration printed before the command
    exit_code: int = 0
    check: Callable[[str, Path], str | None] | None = None  # -> why it failed, or None


def driver_of(sim_root: Path, address: str) -> str:
    """The driver the simulated kernel has the device on ("" for none)."""
    # Reads only: the tree is the simulated machine's, seen like a real one from outside.
    return RealHost(sim_root).link_name(paths.device_file(address, "driver")) or ""


def _table_row(output: str, address: str) -> list[str]:
    for line in output.splitlines():
        if line.strip().startswith(address):
            return line.split()
    return []


def _check_listed(output: str, root: Path) -> str | None:
    if "IOMMU group 31" not in output or GPU not in output:
        return "the status table does not list IOMMU group 31 with the guest's GPU"
    if "nvidia" not in _table_row(output, GPU):
        return f"{GPU} is not shown on nvidia"
    return None


def _check_bound(output: str, root: Path) -> str | None:
    for address in (GPU, GPU_AUDIO):
        if address not in output or "-> vfio-pci" not in output:
            return f"bind did not report {address} moving to vfio-pci"
        if driver_of(root, address) != "vfio-pci":
            return f"{address} is on {driver_of(root, address) or 'no driver'} in the " \
                   "simulated sysfs, not vfio-pci"
    return None


def _check_status_after_bind(output: str, root: Path) -> str | None:
    if "vfio-pci" not in _table_row(output, GPU):
        return f"status does not show {GPU} on vfio-pci"
    if "IOMMU group 31: ready for a guest" not in output:
        return "status does not show group 31 ready for a guest"
    return None


def _check_refused(output: str, root: Path) -> str | None:
    if not output.startswith(f"vfioctl: {ROOT_DISK_CONTROLLER}:"):
        return "the refusal is not one line naming the root disk's controller"
    if "Traceback" in output:
        return "the refusal shows a traceback"
    if driver_of(root, ROOT_DISK_CONTROLLER) != "ahci":
        return f"{ROOT_DISK_CONTROLLER} left ahci"
    return None


def _check_unbound(output: str, root: Path) -> str | None:
    if "vfio-pci -> nvidia" not in output or "vfio-pci -> snd_hda_intel" not in output:
        return "unbind did not report the GPU and its audio going back to their drivers"
    if (driver_of(root, GPU), driver_of(root, GPU_AUDIO)) != ("nvidia", "snd_hda_intel"):
        return "the simulated sysfs does not show nvidia / snd_hda_intel again"
    return None


def _check_detail(output: str, root: Path) -> str | None:
    lines = output.splitlines()
    if not lines or not lines[0].startswith(GPU):
        return f"status {GPU} does not start with the device"
    shown = {line.split("  ")[1].strip(): line.rsplit("  ", 1)[-1].strip()
             for line in lines[1:] if line.startswith("  ") and "  " in line[2:]}
    if shown.get("driver") != "nvidia" or shown.get("state") != "host":
        return f"status {GPU} does not show it back on nvidia, state host"
    return None


STEPS: tuple[Step, ...] = (
    Step(["status"], "Every PCI function of the workstation, by IOMMU group:",
         check=_check_listed),
    Step(["bind", "06:00.0"], "Hand the guest's GPU to vfio-pci; its HDMI audio shares "
         "IOMMU group 31, so it moves too:", check=_check_bound),
    Step(["status"], "Group 31 is now ready for a guest:", check=_check_status_after_bind),
    Step(["bind", "00:1f.2"], "The SATA controller with the host's root filesystem is "
         "refused (exit status 4, InUse), and --force would not change that:",
         exit_code=4, check=_check_refused),
    Step(["unbind", "06:00.0"], "Give the GPU and its audio back to the host drivers "
         "they came from:", check=_check_unbound),
    Step(["status", "06:00.0"], "One device in detail:", check=_check_detail),
)


def vfioctl_command() -> list[str]:
    """The installed vfioctl next to this Python, else ``python -m vfiod.ctl``."""
    script = Path(sys.executable).parent / "vfioctl"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "vfiod.ctl"]


def run_step(step: Step, env: dict[str, str], sim_root: Path) -> None:
    """Show and run one step; DemoFailed when it did not do what it shows."""
    print(f"# {step.says}")
    print(f"$ vfioctl {' '.join(step.args)}", flush=True)
    proc = subprocess.run([*vfioctl_command(), *step.args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                          check=False)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        print(f"[exit status {proc.returncode}]")
    print(flush=True)
    if proc.returncode != step.exit_code:
        raise DemoFailed(f"`vfioctl {' '.join(step.args)}` exited {proc.returncode}, "
                         f"expected {step.exit_code}")
    why = step.check(proc.stdout, sim_root) if step.check is not None else None
    if why:
        raise DemoFailed(f"`vfioctl {' '.join(step.args)}`: {why}")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks below


def main() -> int:
    """Run the demo; 0 when every step did what it shows."""
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="vfiod-demo-"))
    try:
        with PrivateBus() as bus:
            print(f"vfiod demo: the simulated {PROFILE} workstation (a GTX 1080 Ti for the "
                  "host desktop, a second one for a Windows guest), a private system bus, "
                  "and vfiod on it.\n", flush=True)
            started = time.monotonic()
            daemon = start_vfiod(bus, workdir / "root", PROFILE, workdir / "state",
                                 log=workdir / "vfiod.log")
            try:
                print(f"(vfiod ready in {time.monotonic() - started:.1f} s)\n", flush=True)
                env = same_vfiod_env(bus.env())  # this vfiod's vfioctl
                if sys.stdout.isatty():
                    env["COLUMNS"] = str(shutil.get_terminal_size().columns)
                for step in STEPS:
                    run_step(step, env, workdir / "root")
            finally:
                stop_vfiod(daemon)  # before the bus it is on goes away
        print("demo: every step did what it shows")
        return 0
    except DemoFailed as err:
        print(f"demo FAILED: {err}", file=sys.stderr)
        _show_log(workdir / "vfiod.log")
        return 1
    except PrivateBusError as err:
        print(f"demo FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _show_log(path: Path) -> None:
    try:
        tail = path.read_text(errors="replace").splitlines()[-20:]
    except OSError:
        return
    if tail:
        print("the end of vfiod's log:", file=sys.stderr)
        for line in tail:
            print(f"  {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
