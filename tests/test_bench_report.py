"""The benchmark's goals and the README table made from its JSON (no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import readme_table  # noqa: E402
from benchmarks.bench import Results, render_table  # noqa: E402
from benchmarks.goals import GOALS  # noqa: E402


def test_a_keyed_figure_is_judged_against_its_goal() -> None:
    results = Results()
    fast = results.timed("s", "Status", [0.010, 0.012, 0.011], key="status_scale")
    slow = results.timed("s", "GMO", [0.150, 0.140], key="gmo_scale")
    assert fast.goal == GOALS["status_scale"].value and fast.met is True
    assert slow.met is False


def test_the_storm_is_judged_by_its_p99_not_its_median() -> None:
    results = Results()
    samples = [0.001] * 98 + [0.050, 0.060]
    storm = results.timed("s", "storm", samples, key="status_storm_p99")
    assert storm.median == pytest.approx(0.001)
    assert storm.p99 == pytest.approx(0.050)
    assert storm.met is False


def test_a_figure_without_a_key_has_no_verdict() -> None:
    assert Results().timed("s", "x", [1.0]).met is None


def _document() -> dict[str, object]:
    results = Results()
    results.timed("s", "bind", [0.030], key="bind_unbind_dbus")
    results.quantity("s", "rss", 120.0, "MB", key="rss_scale")
    results.timed("g", "start", [0.25], key="growth_start_30")
    results.quantity("c", "ratio", 3.0, "x", key="cmp_vfioctl_ratio")
    return {"machine": {"cpus": 2, "python": "3.11", "load at start": [0.5, 0, 0],
                        "load at end": [0.7, 0, 0]},
            "measured_at": "2026-12-05T07:00:00Z", "mode": "full", "complete": True,
            "goals": {k: {"what": g.what, "value": g.value, "judged": g.judged,
                          "unit": g.unit} for k, g in GOALS.items()},
            "figures": [f.to_json() for f in results.figures]}


def test_the_readme_block_shows_each_goal_with_its_verdict_date_and_load() -> None:
    block = readme_table.render(_document())  # type: ignore[arg-type]
    assert "2026-12-05" in block and "load average 0.50 at start and 0.70 at end" in block
    assert "| D-Bus Bind+Unbind of the GPU pair, simulated host | 30.0 ms | 40.0 ms | met |" \
        in block
    assert "| RSS idle, 4,161 functions | 120 MB | 80 MB | **missed** |" in block
    assert "| Status round trip, 24 functions | - | 0.35 ms | - |" in block  # not measured
    assert "| vfiod start until it owns org.vfiod1 (less the sim build) | 250 ms | - | - |" \
        in block
    assert "| 3.0x |" in block


def test_the_readme_block_shows_what_the_missed_memory_and_managed_objects_are_made_of(
        ) -> None:
    document = _document()
    results = Results()
    results.quantity("vfiod on seed-x99", "  vfiod less the simulated machine", 38.0, "MB",
                     key="rss_seed_less_sim")
    results.quantity("vfiod on scale", "  vfiod less the simulated machine", 66.0, "MB",
                     key="rss_scale_less_sim")
    results.timed("vfiod on scale", "  of it: the client unmarshalling the reply", [0.045],
                  key="gmo_scale_decode")
    document["figures"] += [f.to_json() for f in results.figures]  # type: ignore[operator]
    document["machine"]["python loop"] = "30 ms at start; 31 ms at end"  # type: ignore[index]
    block = readme_table.render(document)  # type: ignore[arg-type]
    assert "24 / 4,161 functions | 38 MB / 66 MB |" in block
    assert "decoding the 3.9 MB reply | 45.0 ms |" in block
    assert "a Python loop of 30 ms at start; 31 ms at end" in block


def test_only_the_marked_block_of_the_readme_is_replaced() -> None:
    readme = "# x\nbefore\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nafter\n"
    new = readme_table.replace_block(readme, "new")
    assert new == "# x\nbefore\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\nafter\n"
    with pytest.raises(ValueError):
        readme_table.replace_block("no markers", "new")


def test_the_plain_table_shows_the_load_average_at_start_and_end_once() -> None:
    results = Results()
    results.machine = {"cpus": 2, "load at start": [1.0, 2.0, 3.0], "python loop": "x"}
    assert "load average:      1.00 2.00 3.00 (1, 5, 15 min, at start)\n" in render_table(
        results)
    results.machine["load at end"] = [4.0, 5.0, 6.0]
    table = render_table(results)
    assert ("load average:      1.00 2.00 3.00 (1, 5, 15 min, at start); at end "
            "4.00 5.00 6.00\n") in table
    assert "load at" not in table
