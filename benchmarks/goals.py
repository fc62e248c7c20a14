"""The goals of issue 14, one per figure the issue's table names.

Each figure ``bench.py`` measures for one of them carries its key; the goal is held
against the figure's median (or its p99, or a single value) and the table says "ok" or
"MISSED". ``readme_table.py`` writes the README's figures table from the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    """What one figure should be at most, in the figure's own unit."""

    what: str  # the words for the figure
    value: float  # seconds for timed figures; MB, bytes or a ratio for quantities
    judged: str = "median"  # "median", "p99" or "value"
    unit: str = "s"


#: By key; the order is the README table's.
GOALS: dict[str, Goal] = {
    "bind_unbind_dbus": Goal("D-Bus Bind+Unbind of the GPU pair, simulated host", 0.040),
    "status_scale": Goal("Status round trip, 4,161 functions", 0.015),
    "status_seed": Goal("Status round trip, 24 functions", 0.00035),
    "start_seed": Goal("vfiod start until it owns org.vfiod1 (less building the simulated "
                       "machine), 24 functions", 0.3),
    "start_scale": Goal("vfiod start until it owns org.vfiod1 (less building the simulated "
                        "machine), 4,161 functions", 1.5),
    "rss_seed": Goal("RSS idle, 24 functions", 40.0, "value", "MB"),
    "rss_scale": Goal("RSS idle, 4,161 functions", 80.0, "value", "MB"),
    "gmo_scale": Goal("GetManagedObjects, 4,161 functions", 0.100),
    "vfioctl_status": Goal("`vfioctl status`, whole process, 24 functions", 0.080),
    "release_host": Goal("guest exit to devices back (on_release host), simulated", 0.200),
    "release_reset": Goal("guest exit to device reset and free (on_release reset), "
                          "simulated", 0.200),
    "status_storm_p99": Goal("Status during 50 clients' storm, p99", 0.005, "p99"),
}

#: The sizes (functions, scale-N profiles) of the growth figures: bench.py measures them,
#: readme_table.py shows them.
GROWTH_SIZES = (30, 1000, 4096)
