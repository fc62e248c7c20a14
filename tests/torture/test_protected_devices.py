"""Root itself, with force, cannot move what the host needs: every bridge (the host
bridge included, issue 11.7) and the root disk's controller. Enumerated from the
running daemon's Device objects, so a profile's new bridges are covered too."""

from __future__ import annotations

from integration.helpers import Vfiod

from .machine import changed, fingerprint
from .report import Summary

SCENARIO = "protected devices"
ROOT_DISK = "0000:00:1f.2"
#: PCI base class of bridges (host, ISA, PCI-to-PCI ...).
BRIDGE_CLASS = 0x06


def test_no_bridge_and_not_the_root_disk_can_be_bound_even_with_force(
        vfiod: Vfiod, summary: Summary) -> None:
    status = vfiod.status()
    bridges = [a for a in status if vfiod.get_property(a, "Class") >> 16 == BRIDGE_CLASS]
    before = fingerprint(vfiod.sim_root)
    bound = []
    for address in [*bridges, ROOT_DISK]:
        for args in (("0",), ("1", "force", "b", "true"),
                     ("2", "force", "b", "true", "group", "b", "false")):
            result = vfiod.call("Bind", "sa{sv}", address, *args)
            if result.returncode == 0:
                bound.append(f"{address} {args}")
    writes = changed(before, fingerprint(vfiod.sim_root))
    summary.add(SCENARIO, "bridges found (by class)", len(bridges))
    summary.add(SCENARIO, "Binds of a bridge or the root disk that succeeded", len(bound),
                must_be_zero=True)
    summary.add(SCENARIO, "host writes (files changed)", len(writes), must_be_zero=True)
    assert "0000:00:00.0" in bridges  # the host bridge is one (class 0x0600)
    assert bound == [] and writes == []
