"""The distribution tier: ``python -m tests.distro.run [--keep-image] [--boot-timeout S]``.

Builds (or takes from the cache) a Debian 12 base image and its dracut layer, installs
this checkout into a copy of each the README's way, boots the first twice and the dracut
one once under QEMU with systemd as PID 1, and
reports each check the guest ran (tests/distro/guest/checks.py) as one line. Needs root
(debootstrap, systemd-nspawn). When it cannot run it says so in one line and fails,
unless VFIOD_VM_OPTIONAL=1 (then it exits 0: the tier was NOT run). VFIOD_VM_LOCK names
a file to lock around the boots (for machines shared with other QEMU tiers).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vfiod.privatebus import die_with_parent

from tests.vm.cache import EXIT_NOT_RUN  # noqa: F401 (the tier's exit code, re-exported)
from tests.vm.cache import cache_dir, flocked, locked, prune_runs
from tests.vm.cache import not_run as tier_not_run
from tests.vm.qemu import qemu_usable

from . import machine
from .guest import checks
from .image import (BuildError, Image, build_image, ensure_base, ensure_dracut_base,
                    read_results)

#: Exit codes of the tier itself.
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
#: A boot of the image under TCG took 90-200 s to the checks; the checks 3-6 minutes.
DEFAULT_BOOT_TIMEOUT = 1200.0
KEEP_RUNS = 3
PREFIX = "vfiod-distro: "
POLL_SECONDS = 0.5


def missing_prerequisite() -> str | None:
    """Why the tier cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "it needs root (debootstrap and systemd-nspawn build the image)"
    for tool, package in (("debootstrap", "debootstrap"),
                          ("systemd-nspawn", "systemd-container"),
                          ("mkfs.ext4", "e2fsprogs"), ("debugfs", "e2fsprogs"),
                          ("git", "git")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: {package})"
    return qemu_usable()


#: Say in one line that this tier did not run; 0 only when it is optional.
not_run = functools.partial(tier_not_run, "distro: the distribution tier")


@dataclass
class Boot:
    """How one boot went."""

    number: int
    seconds: float = 0.0
    timed_out: bool = False
    qemu_status: int | None = None
    outcomes: list[dict[str, object]] = field(default_factory=list)


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Hold VFIOD_VM_LOCK (a file other QEMU tiers lock too), when set, around the boots.

    On a shared machine the TCG guests of several runs would each take twice as long;
    the image is built outside the lock, while another tier's guest runs.
    """
    path = os.environ.get("VFIOD_VM_LOCK")
    if not path:
        yield
        return
    print(f"distro: waiting for {path}", flush=True)
    with flocked(path):
        yield


def boot(image: Image, run_dir: Path, number: int, timeout: float) -> Boot:
    """Boot the image once; stream the guest's check lines; QEMU always stopped."""
    serial = run_dir / f"boot{number}-serial.log"
    command = machine.qemu_command(image.kernel, image.initrd, image.disk, serial, number)
    (run_dir / f"boot{number}-qemu-command.txt").write_text(" ".join(command) + "\n")
    result = Boot(number)
    started = time.monotonic()
    with open(run_dir / f"boot{number}-qemu.log", "wb") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                preexec_fn=functools.partial(die_with_parent,
                                                             signal.SIGKILL))
    offset = 0
    try:
        while proc.poll() is None:
            offset = _follow(serial, offset)
            if time.monotonic() - started > timeout:
                result.timed_out = True
                break
            time.sleep(POLL_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
        result.qemu_status = proc.wait()
    _follow(serial, offset)
    result.seconds = time.monotonic() - started
    return result


def _follow(serial: Path, offset: int) -> int:
    """Print the guest's check lines appended to the serial log since *offset*."""
    try:
        with open(serial, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1  # whole lines only
    for raw in data[:end].decode(errors="replace").splitlines():
        at = raw.find(PREFIX)
        if at >= 0:
            print(f"distro: {raw[at + len(PREFIX):].rstrip()}", flush=True)
    return offset + end


def collect(image: Image, run_dir: Path, result: Boot) -> None:
    """The boot's outcomes from the disk image; a check that left none failed."""
    results = run_dir / "results"
    read_results(image.disk, results, f"{checks.RESULTS}/boot{result.number}")
    path = results / f"boot{result.number}" / "results.json"
    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        got = []
    by_name = {o["name"]: o for o in got}
    why = "the boot timed out" if result.timed_out else "the guest never ran it"
    for check in checks.BOOTS[result.number]:
        name = checks.check_name(check)
        result.outcomes.append(by_name.get(name, {
            "name": name, "passed": False, "seconds": 0.0,
            "detail": f"no result: {why} (see boot{result.number}-serial.log)"}))


def report(boots: list[Boot], build_seconds: float, base_seconds: float) -> tuple[int, str]:
    """The exit code and the closing lines: every check by name, then the totals."""
    lines = ["distro: ---- checks (evidence: results/bootN/<check>.log) ----"]
    passed = failed = 0
    for b in boots:
        for o in b.outcomes:
            ok = bool(o["passed"])
            passed += ok
            failed += not ok
            lines.append(f"distro: {'PASS' if ok else 'FAIL'} "
                         f"{checks.BOOT_LABELS[b.number]}::{o['name']} "
                         f"({o['seconds']} s): {o['detail']}")
    times = [f"base {base_seconds:.0f} s", f"images {build_seconds:.0f} s",
             *(f"{checks.BOOT_LABELS[b.number]} {b.seconds:.0f} s" for b in boots)]
    total = base_seconds + build_seconds + sum(b.seconds for b in boots)
    outcome = "passed" if failed == 0 else "FAILED"
    lines.append(f"distro: distribution tier {outcome}: {passed} checks passed, "
                 f"{failed} failed; {', '.join(times)}; total {total:.0f} s")
    return (0 if failed == 0 else EXIT_FAILED), "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build both images, boot three times, report; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tests.distro.run", description=__doc__)
    parser.add_argument("--keep-image", action="store_true",
                        help="keep the run's disk image (1.7 GB) even when every check passed")
    parser.add_argument("--boot-timeout", type=float, default=DEFAULT_BOOT_TIMEOUT,
                        metavar="SECONDS", help="kill a boot after this long")
    opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
    why = missing_prerequisite()
    if why:
        return not_run(why)
    cache = cache_dir() / "distro"
    runs = cache / "runs"
    started = time.monotonic()
    try:
        with locked(cache):
            base = ensure_base(cache, say=lambda line: print(line, flush=True))
            dracut_base = ensure_dracut_base(cache, base,
                                             say=lambda line: print(line, flush=True))
        base_seconds = time.monotonic() - started
        prune_runs(runs, KEEP_RUNS)
        run_dir = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        run_dir.mkdir(parents=True)
        print(f"distro: run folder {run_dir}", flush=True)
        images = {generator: build_image(layer, run_dir, cache, generator=generator,
                                         say=lambda line: print(line, flush=True))
                  for generator, layer in (("initramfs-tools", base),
                                           ("dracut", dracut_base))}
    except (BuildError, subprocess.CalledProcessError, OSError) as exc:
        return not_run(f"the image could not be built: {exc}")
    except KeyboardInterrupt:
        print("distro: interrupted while building; the distribution tier was NOT run")
        return EXIT_INTERRUPTED
    build_seconds = time.monotonic() - started - base_seconds
    boots: list[Boot] = []
    try:
        with machine_lock():  # every boot: the reboot follows at once
            for number in sorted(checks.BOOTS):
                image = images[checks.BOOT_GENERATORS[number]]
                print(f"distro: boot {number} of {len(checks.BOOTS)} "
                      f"({checks.BOOT_LABELS[number]}, {image.disk.name})", flush=True)
                result = boot(image, run_dir, number, opts.boot_timeout)
                collect(image, run_dir, result)
                boots.append(result)
                if result.timed_out:
                    print(f"distro: boot {number} did not finish within "
                          f"{opts.boot_timeout:g} s; QEMU killed", flush=True)
    except KeyboardInterrupt:
        print("distro: interrupted; QEMU stopped")
        return EXIT_INTERRUPTED
    code, text = report(boots, build_seconds, base_seconds)
    print(text, flush=True)
    if code == 0 and not opts.keep_image:
        for image in images.values():
            image.disk.unlink(missing_ok=True)
    print(f"distro: evidence in {run_dir}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
