"""``make test``: the host tier, the real-kernel tier, the distribution tier, one summary.

``python -m tests.tiers [--host-only | --vm-only | --distro-only]``. Every tier always
runs (a host-tier failure does not hide the others), each one's output streams through
as it comes, and the last lines say how each tier ended. The exit code is 0 only when every
tier that was asked for passed; pytest's "no tests collected" (5) is a failure.
"""

from __future__ import annotations

import argparse
import re
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: pytest's "no tests were collected".
PYTEST_NO_TESTS = 5
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: pytest's closing line: "==== 3 failed, 740 passed, 6 skipped in 181.20s ====", or
#: with -q (the guest's) the same without the bars; "no tests ran in 0.01s".
_PYTEST_TOTALS = re.compile(
    r"^=*\s*((?:\d+ [a-z]+, )*\d+ [a-z]+ in [0-9.]+s\b.*?|no tests ran\b.*?)\s*=*$")


@dataclass(frozen=True)
class Tier:
    """One tier: its name, its ``--NAME-only`` option, its command, and how its own
    closing line starts (``PREFIX: NAME ...``, or ``PREFIX: the NAME was NOT run``)."""

    name: str
    option: str
    help: str
    argv: tuple[str, ...]  # after sys.executable
    prefix: str = ""  # its own lines' prefix; "": pytest's totals only


#: Every tier, in the order they run.
TIERS = (
    Tier("host tier", "host", "run the host tier only", ("-m", "pytest", "tests")),
    Tier("real-kernel tier", "vm", "run the real-kernel tier only",
         ("-m", "tests.vm.run"), "vm: "),
    # After the busybox tier: the slowest, and a failure there is easier to read once
    # the real-kernel tier has said how the kernel itself behaves.
    Tier("distribution tier", "distro",
         "run the distribution tier only (Debian booted by systemd)",
         ("-m", "tests.distro.run"), "distro: "),
)


@dataclass
class TierResult:
    """How one tier ended."""

    name: str
    code: int
    seconds: float
    detail: str  # pytest's totals and/or the tier's own summary line

    @property
    def passed(self) -> bool:
        """Exit code 0; pytest's 5 (no tests) is not 0, so it fails too."""
        return self.code == 0


def totals(lines: Sequence[str]) -> str:
    """What a tier's output said about how it ended: pytest's totals, the vm summary."""
    found: list[str] = []
    for raw in lines:
        line = _ANSI.sub("", raw).strip()
        match = _PYTEST_TOTALS.match(line)
        if match:  # the last one counts (the guest collects once before it runs)
            found = [x for x in found if not x[0].isdigit() and not x.startswith("no tests")]
            found.append(match.group(1))
        else:
            found.extend(line.removeprefix(t.prefix).removeprefix(f"{t.name} ")
                         for t in TIERS if t.prefix and line.startswith(
                             (f"{t.prefix}{t.name} ", f"{t.prefix}the {t.name} was NOT run")))
    return "; ".join(found)


def unreadable_by_others(path: Path) -> Path | None:
    """The first folder on the way to *path* that other users cannot enter, if any.

    Some host tests call vfiod as the unprivileged user nobody, with this repository's
    venv: a clone in /root (mode 0700 on Debian) fails them all for that reason alone.
    """
    return first_closed([*reversed(path.parents), path])


def first_closed(folders: Sequence[Path]) -> Path | None:
    """The first of *folders* without search permission for others, if any."""
    for folder in folders:
        try:
            if not folder.stat().st_mode & stat.S_IXOTH:
                return folder
        except OSError:
            return folder
    return None


def run_tier(name: str, argv: list[str]) -> TierResult:
    """Run one tier with its output passed through; keep what its end said."""
    print(f"tiers: {name}: {' '.join(argv)}", flush=True)
    started = time.monotonic()
    tail: list[str] = []
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        for chunk in iter(proc.stdout.readline, b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            tail.append(chunk.decode(errors="replace"))
            del tail[:-200]
    except KeyboardInterrupt:
        proc.terminate()
    code = proc.wait()
    return TierResult(name, code, time.monotonic() - started, totals(tail))


def summary(results: Sequence[TierResult]) -> list[str]:
    """The closing lines: one per tier, then the verdict."""
    lines = ["", "==== summary of the tiers " + "=" * 40]
    for r in results:
        outcome = "passed" if r.passed else f"FAILED (exit {r.code}" + (
            ", no tests ran)" if r.code == PYTEST_NO_TESTS else ")")
        detail = f": {r.detail}" if r.detail else ""
        lines.append(f"{r.name:<17} {outcome} in {r.seconds:.0f} s{detail}")
    failed = [r.name for r in results if not r.passed]
    lines.append("make test: FAILED (" + ", ".join(failed) + ")" if failed
                 else "make test: passed")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the tiers asked for; print the summary; 0 only when all of them passed."""
    parser = argparse.ArgumentParser(prog="python -m tests.tiers", description=__doc__)
    only = parser.add_mutually_exclusive_group()
    for tier in TIERS:
        only.add_argument(f"--{tier.option}-only", action="store_const", dest="only",
                          const=tier.name, help=tier.help)
    opts = parser.parse_args(argv)
    tiers = [(t.name, [sys.executable, *t.argv]) for t in TIERS
             if opts.only in (None, t.name)]
    closed = unreadable_by_others(REPO)
    warning = (f"tiers: WARNING: other users cannot enter {closed}, so the tests that call "
               f"vfiod as the user nobody will fail; clone where others can read (such as "
               f"/srv or /usr/src) or `chmod o+x {closed}`") if closed else ""
    if warning:
        print(warning, flush=True)
    results = [run_tier(name, cmd) for name, cmd in tiers]
    print("\n".join(summary(results)), flush=True)
    if warning:
        print(warning, flush=True)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
