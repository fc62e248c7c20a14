#!/usr/bin/env python3
"""Write the README's figures from the benchmark's JSON (``benchmarks/last.json``).

    .venv/bin/python benchmarks/readme_table.py [--json PATH] [--readme PATH] [--check]

The README's block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is
replaced: the issue's figures with their goals, the growth from 30 to 1,000 to 4,096
functions, and the side-by-side ratios, with the date, the machine and its load when
they were measured. The block is never edited by hand: run ``make bench`` on an idle
machine, then this. ``--check`` only says whether the README matches the JSON (exit 1
when not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.goals import GROWTH_SIZES  # noqa: E402

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
#: The growth table's rows: (key prefix, what).
GROWTH_ROWS = (("growth_start", "vfiod start until it owns org.vfiod1 (less the sim build)"),
               ("growth_rss", "vfiod RSS idle (with the simulated kernel in it)"),
               ("growth_status", "D-Bus Status round trip"),
               ("growth_gmo", "D-Bus GetManagedObjects round trip"),
               ("growth_vfioctl", "`vfioctl status`, whole process"))


def shown(figure: dict[str, Any] | None) -> str:
    """A figure's number as the table shows it: the one held against its goal (the
    median, the p99 or the value: bench.Figure.judged_value); "-" when not measured."""
    if figure is None or figure["judged_value"] is None:
        return "-"
    return number(figure["judged_value"], figure["unit"])


def number(value: float, unit: str) -> str:
    """A number in *unit* (seconds, MB, bytes, a ratio) as the table shows it."""
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "x":
        return f"{value:.1f}x"
    if unit == "bytes":
        return f"{value / 1024:,.0f} KiB"
    ms = value * 1000
    if ms >= 1000:
        return f"{value:.2f} s"
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def goal_shown(goal: dict[str, Any]) -> str:
    """A goal as the table shows it."""
    prefix = "p99 " if goal["judged"] == "p99" else ""
    return prefix + number(goal["value"], goal["unit"])


def render(data: dict[str, Any]) -> str:
    """The README block (without its markers) for one benchmark run."""
    by_key = {f["key"]: f for f in data["figures"] if f.get("key")}
    machine = data["machine"]
    start = machine.get("load at start") or [0.0, 0.0, 0.0]
    end = machine.get("load at end") or start
    lines = [
        f"Measured by `make bench` on {data.get('measured_at', '?')[:10]} "
        f"({data.get('mode', 'full')} run{'' if data.get('complete') else ', incomplete'}): "
        f"{machine.get('cpus')} CPUs, Python {machine.get('python')}, load average "
        f"{start[0]:.2f} at start and {end[0]:.2f} at end (1 min)"
        + (f", a Python loop of {machine['python loop']}" if machine.get("python loop") else "")
        + ". Medians; the storm's line is its p99. Written by `benchmarks/readme_table.py` from "
        "`benchmarks/last.json`: do not edit by hand.",
        "",
        "| figure | measured | goal | |",
        "| --- | --- | --- | --- |",
    ]
    for key, goal in data["goals"].items():
        figure = by_key.get(key)
        verdict = "-" if figure is None or figure.get("met") is None else (
            "met" if figure["met"] else "**missed**")
        lines.append(f"| {goal['what']} | {shown(figure)} | {goal_shown(goal)} | {verdict} |")
    with_build = [by_key.get(k) for k in ("start_seed_with_build", "start_scale_with_build")]
    if any(with_build):
        lines.append(f"| vfiod start including building the simulated machine, 24 / 4,161 "
                     f"functions | {shown(with_build[0])} / {shown(with_build[1])} | | |")
    # Lines without a goal of their own that say what the missed ones are made of.
    less_sim = [by_key.get(k) for k in ("rss_seed_less_sim", "rss_scale_less_sim")]
    if any(less_sim):
        lines.append(f"| RSS idle less the simulated machine's own memory (estimate: the "
                     f"simulated kernel lives in vfiod's process), 24 / 4,161 functions | "
                     f"{shown(less_sim[0])} / {shown(less_sim[1])} | | |")
    decoding = by_key.get("gmo_scale_decode")
    if decoding is not None:
        lines.append(f"| of GetManagedObjects, 4,161 functions: the client (dbus-fast) "
                     f"decoding the 3.9 MB reply | {shown(decoding)} | | |")
    lines += ["", "How it grows (scale-N: ConnectX-5 PFs and VFs, one IOMMU group each):", "",
              "| figure | " + " | ".join(f"{n:,}" for n in GROWTH_SIZES) + " |",
              "| --- |" + " --- |" * len(GROWTH_SIZES)]
    for prefix, what in GROWTH_ROWS:
        cells = [shown(by_key.get(f"{prefix}_{n}")) for n in GROWTH_SIZES]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    lines += ["", "Side by side, in one run (seed-x99):", "",
              "| figure | vfiod | reference | ratio |", "| --- | --- | --- | --- |",
              f"| `vfioctl status` vs `lspci -k` on the same simulated tree, whole process "
              f"| {shown(by_key.get('cmp_vfioctl'))} | {shown(by_key.get('cmp_lspci'))} "
              f"| {shown(by_key.get('cmp_vfioctl_ratio'))} |",
              f"| engine bind+unbind of the GPU pair vs the simulated kernel's own writes "
              f"| {shown(by_key.get('cmp_engine'))} | {shown(by_key.get('cmp_kernel'))} "
              f"| {shown(by_key.get('cmp_bind_ratio'))} |"]
    return "\n".join(lines)


def replace_block(readme: str, block: str) -> str:
    """*readme* with the text between the markers replaced by *block*."""
    head, found, rest = readme.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"the README has no {BEGIN} ... {END} block")
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or --check) the README's figures block; 0 when done or up to date."""
    parser = argparse.ArgumentParser(description="Write the README's figures from "
                                                 "the benchmark's JSON.")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "last.json"))
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--check", action="store_true",
                        help="only say whether the README matches the JSON")
    args = parser.parse_args(argv)
    data = json.loads(Path(args.json).read_text())
    readme = Path(args.readme).read_text()
    new = replace_block(readme, render(data))
    if args.check:
        if new != readme:
            print(f"{args.readme}: the figures differ from {args.json}", file=sys.stderr)
            return 1
        return 0
    Path(args.readme).write_text(new)
    print(f"{args.readme}: figures written from {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
