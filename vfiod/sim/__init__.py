"""The simulated host: a model of the Linux kernel's PCI/VFIO behaviour over a real tree.

``SimHost(profile="seed-x99", root=None)`` builds a directory tree shaped like /sys,
/dev and /proc and serves it through the Host interface: reads see exactly what real
sysfs shows, writes get the kernel's semantics and errno (shared/notes/kernel-facts.md),
uevents come in the kernel's order, guests are real processes holding the tree's
device nodes. See vfiod.sim.kernel for the rules, vfiod.sim.profiles for the machines.

Knobs for tests and applet developers: ``sim.faults`` (fail, delay, crash_before,
crash_after), ``sim.kernel.set_reset_outcome``, ``sim.kernel.kill_device``,
``sim.kernel.unplug`` / ``plug``, ``sim.spawn_holder`` (a guest or desktop process;
``spawn_holder(root, ...)`` works without a SimHost, against a daemon's --sim-root),
``reboot(root)`` (the next SimHost on that root boots afresh, with a new boot id),
and plain file writes to the tree (applied by a watcher; ``sim.sync_external()`` waits
for them, ``sim.external_log`` says how each went).

Names are imported lazily so that ``python -m vfiod.sim.holder`` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vfiod.sim.faults import Faults, SimulatedCrash
    from vfiod.sim.holder import Holder, spawn_holder
    from vfiod.sim.host import SimHost, SimRootBusy, reboot
    from vfiod.sim.profiles import PROFILES

__all__ = ["PROFILES", "Faults", "Holder", "SimHost", "SimRootBusy", "SimulatedCrash",
           "reboot", "spawn_holder"]

_WHERE = {
    "PROFILES": "vfiod.sim.profiles",
    "Faults": "vfiod.sim.faults",
    "SimulatedCrash": "vfiod.sim.faults",
    "Holder": "vfiod.sim.holder",
    "spawn_holder": "vfiod.sim.holder",
    "SimHost": "vfiod.sim.host",
    "SimRootBusy": "vfiod.sim.host",
    "reboot": "vfiod.sim.host",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'vfiod.sim' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
