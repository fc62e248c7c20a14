"""The real-kernel test tier: ``python -m tests.vm.run [--keep] [--shell-cmd CMD] [pytest args]``.

Fetches and caches a Debian kernel and an initramfs, boots a QEMU guest with an emulated
IOMMU and the PCI layout of layout.py, runs the guest pytest suite (or CMD) inside it
and exits with that command's exit code. When QEMU cannot run here it says so in one
line and fails, unless VFIOD_VM_OPTIONAL=1 (then it exits 0: the tier was NOT run).
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from . import layout, qemu
from .guest import timings
from .cache import EXIT_NOT_RUN  # noqa: F401 (the tier's exit code, re-exported)
from .cache import cache_dir, locked, prune_runs
from .cache import not_run as tier_not_run
from .initramfs import ensure_initramfs, find_busybox
from .kernel import Kernel, SetupError, cached_kernels, ensure_kernel

REPO = Path(__file__).resolve().parents[2]
GUEST_TESTS = "tests/vm/guest"
DEFAULT_TIMEOUT = 600.0
#: Exit codes of the tier itself (the guest command's own code is passed through).
EXIT_NO_RESULT = 3  # the guest never recorded an exit code
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
#: Run folders kept (failed runs and --keep ones); older ones are removed.
KEEP_RUNS = 5


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and everything else for pytest (after an optional ``--``)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.vm.run",
        description="Run the guest test suite in a QEMU guest with an emulated IOMMU.",
        epilog="Other arguments go to pytest in the guest. Environment: VFIOD_VM_CACHE, "
               "VFIOD_VM_OPTIONAL=1, VFIOD_VM_TIMEOUT.")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run folder (serial log, output) even on success")
    parser.add_argument("--shell-cmd", metavar="CMD",
                        help="run this shell command in the guest instead of pytest")
    parser.add_argument("--vm-timeout", type=float, metavar="SECONDS",
                        default=float(os.environ.get("VFIOD_VM_TIMEOUT", DEFAULT_TIMEOUT)),
                        help=f"kill the guest after this long (default {DEFAULT_TIMEOUT:g})")
    if "--" in argv:
        i = argv.index("--")
        opts, rest = parser.parse_known_args(argv[:i])
        return opts, rest + argv[i + 1:]
    return parser.parse_known_args(argv)


def missing_prerequisite(cache: Path) -> str | None:
    """Why the tier cannot run on this machine, or None when it can."""
    why = qemu.qemu_usable()
    if why:
        return why
    for tool, package in (("modprobe", "kmod"), ("depmod", "kmod"), ("cpio", "cpio")):
        if shutil.which(tool) is None and not os.path.exists(f"/sbin/{tool}"):
            return f"{tool} is not installed (Debian: {package})"
    if find_busybox() is None:
        return "no statically linked busybox (Debian: busybox-static)"
    if not cached_kernels(cache):
        for tool in ("apt-get", "apt-cache", "dpkg"):
            if shutil.which(tool) is None:
                return f"{tool} is not available to fetch the guest kernel"
    return None


def guest_command(shell_cmd: str | None, pytest_args: list[str]) -> str:
    """The shell command the guest runs in the repo folder."""
    if shell_cmd is not None:
        return shell_cmd
    # The interpreter running this (the repo's venv) is at the same path in the guest.
    argv = [sys.executable, "-m", "pytest", GUEST_TESTS, "-p", "no:cacheprovider", "-q",
            *pytest_args]
    return shlex.join(argv)


def warmup_command(shell_cmd: str | None, pytest_args: list[str]) -> str:
    """What the guest runs while its drivers load: the suite, collected only.

    That imports everything the run will (pytest, conftests, vfiod, the test modules,
    rewritten and cached), so the cold start over 9p overlaps the drivers' probing.
    """
    if shell_cmd is not None:
        return ""
    return guest_command(None, [*pytest_args, "--collect-only"])


def write_job(results: Path, kernel: Kernel, command: str, warmup: str = "") -> None:
    """job.env for init.sh, and job.sh: the command, run by the host's /bin/sh."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "job.env").write_text(
        f"KERNEL_MODULES={shlex.quote(str(kernel.modules))}\n"
        f"WORKDIR={shlex.quote(str(REPO))}\n"
        f"WARMUP={shlex.quote(warmup)}\n")
    (results / "job.sh").write_text(
        "# Written by tests/vm/run.py; run by the guest's init in the repo folder.\n"
        f"{command}\n")


#: Say in one line that this tier did not run; 0 only when it is optional.
not_run = functools.partial(tier_not_run, "vm: the real-kernel tier")


def main(argv: list[str] | None = None) -> int:
    """Set up, boot, run, report; returns the exit code."""
    opts, pytest_args = parse_args(sys.argv[1:] if argv is None else argv)
    cache = cache_dir()
    why = missing_prerequisite(cache)
    if why:
        return not_run(why)

    t0 = time.monotonic()
    try:
        with locked(cache):
            kernel = ensure_kernel(cache)
            initramfs = ensure_initramfs(cache, kernel)
    except SetupError as exc:
        return not_run(f"setup failed: {exc}")
    except KeyboardInterrupt:
        print("vm: interrupted during setup; the real-kernel tier was NOT run")
        return EXIT_INTERRUPTED
    setup_seconds = time.monotonic() - t0

    prune_runs(cache / "runs", KEEP_RUNS)
    run_dir = cache / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    results = run_dir / "results"
    write_job(results, kernel, guest_command(opts.shell_cmd, pytest_args),
              warmup_command(opts.shell_cmd, pytest_args))
    serial_log = run_dir / "serial.log"
    disk = layout.make_disk(run_dir / "ahci-disk.img")
    command = qemu.qemu_command(kernel.boot_image, initramfs, results, serial_log,
                                disk_image=disk)
    print(f"vm: booting {kernel.version} (run folder {run_dir})", flush=True)
    result = qemu.boot(command, results, run_dir / "qemu.log", opts.vm_timeout)

    code = _exit_code(result, opts.vm_timeout)
    if code != 0:
        print(failure_report(result, run_dir))
    for line in timings.lines(timings.read(results)):
        print(f"vm: measured: {line}")
    print(_summary(code, result, setup_seconds), flush=True)
    if code == 0 and not opts.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        print(f"vm: logs kept in {run_dir}")
    return code


def boot_failed(result: qemu.GuestResult) -> bool:
    """Whether the guest never got as far as starting the job."""
    return "job" not in result.stages


def failure_report(result: qemu.GuestResult, run_dir: Path) -> str:
    """What to show after a failed run: the console when the boot failed, else the tests'.

    A failing test says why in its own output; 60 lines of kernel console there would
    bury it. The console matters only when the guest never reached the job.
    """
    if boot_failed(result):
        parts = [f"--- serial console (last lines of {run_dir / 'serial.log'}) ---",
                 qemu.serial_tail(run_dir / "serial.log")]
        qemu_log = qemu.serial_tail(run_dir / "qemu.log", 20)
        if qemu_log:
            parts.append(f"--- QEMU ---\n{qemu_log}")
        return "\n".join(parts)
    return failing_tests(run_dir / "results" / "output.log")


def failing_tests(output_log: Path, lines: int = 20) -> str:
    """pytest's short summary of the failures, from the job's output, or its last lines."""
    try:
        output = output_log.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- the job wrote no output ({output_log}) ---"
    for i, line in enumerate(output):
        if "short test summary info" in line:
            return "\n".join(["--- the guest's failing tests ---", *output[i + 1:]])
    return "\n".join([f"--- the job's last lines ({output_log}) ---", *output[-lines:]])


def _exit_code(result: qemu.GuestResult, timeout: float) -> int:
    """The job's exit code, or the tier's own when the guest did not deliver one."""
    if result.interrupted:
        print("vm: interrupted; QEMU stopped")
        return EXIT_INTERRUPTED
    if result.timed_out:
        print(f"vm: the guest did not finish within {timeout:g} s; QEMU killed")
        return EXIT_TIMEOUT
    if result.exit_code is None:
        why = result.init_error or f"QEMU exited with status {result.qemu_status}"
        print(f"vm: the guest recorded no exit code: {why}")
        return EXIT_NO_RESULT
    return result.exit_code


#: init.sh's stages, and what the time up to each was spent on.
STAGE_NAMES = (("rootfs", "kernel+init"), ("drivers", "drivers"), ("udev", "udev"),
               ("warmup", "warm-up wait"), ("job", "command"))


def _summary(code: int, result: qemu.GuestResult, setup_seconds: float) -> str:
    """One line: outcome and where the time went."""
    parts, previous = [], 0.0
    for stage, label in STAGE_NAMES:
        if stage in result.stages:
            parts.append(f"{label} {result.stages[stage] - previous:.1f} s")
            previous = result.stages[stage]
    detail = f" ({', '.join(parts)})" if parts else ""
    udev = {"yes": "; udevd ran", "no": "; no udevd"}.get(result.udevd, "")
    outcome = "passed" if code == 0 else f"FAILED (exit {code})"
    return (f"vm: real-kernel tier {outcome}: setup {setup_seconds:.1f} s, "
            f"boot+tests {result.seconds:.1f} s{detail}{udev}; "
            f"total {setup_seconds + result.seconds:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
