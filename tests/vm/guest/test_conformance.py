"""The simulated host against the real kernel: the same writes, the same trace.

tests/vm/scenario.py runs once against this guest's kernel (RealHost("/")) and once
against the simulated ``test-guest`` profile, here in the same guest, and every step
must show the same errno, the same sysfs state and the same uevents. A difference is a
bug of vfiod/sim, fixed there. udevd is stopped for this module so that both event
sources deliver the kernel's own uevents in the kernel's order.

The real trace is also written to $VFIOD_VM_RESULTS/real-trace.json: when the kernel's
behaviour changes, that file replaces tests/vm/data/real-trace.json, which the host tier
checks the simulation against (tests/vm/test_vm_scenario_on_sim.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vfiod.host.real import RealHost
from vfiod.sim import SimHost

from .. import scenario

#: What `modprobe vfio-pci` loads (vfio-pci's dependencies and vfio's soft one), in an
#: order modprobe -r can remove them: the scenario starts with none of them loaded.
VFIO_MODULES = ("vfio_pci", "vfio_pci_core", "vfio_iommu_type1", "vfio_virqfd", "vfio",
                "irqbypass")




def unload_vfio(host: RealHost) -> None:
    """Back to the state of a fresh boot: no VFIO module, no /dev/vfio."""
    for module in VFIO_MODULES:
        if host.module_loaded(module):
            subprocess.run(["modprobe", "-r", module], check=True, capture_output=True,
                           timeout=60)
    assert not any(host.module_loaded(m) for m in VFIO_MODULES)
    assert not host.exists("/dev/vfio")


@pytest.fixture(scope="module")
def real_trace(host: RealHost, udevd_stopped: None) -> list[scenario.Observation]:
    """The scenario on this guest's kernel (recorded to the results share too)."""
    unload_vfio(host)
    probe = host.open_events()
    source = getattr(probe, "source", None)
    probe.close()
    assert source == "kernel"
    trace = scenario.run(host)
    results = os.environ.get("VFIOD_VM_RESULTS")
    if results:
        Path(results, scenario.REAL_TRACE.name).write_text(scenario.to_json(trace))
    return trace


@pytest.fixture(scope="module")
def sim_trace(real_trace: list[scenario.Observation]) -> list[scenario.Observation]:
    """The scenario on the simulated profile of this guest."""
    with SimHost("test-guest") as sim:
        return scenario.run(sim)


pytestmark = pytest.mark.alters_slot  # the scenario ends re-adding the slot's functions


def test_every_write_fails_with_the_errno_kernel_facts_gives(
        real_trace: list[scenario.Observation]) -> None:
    assert scenario.unexpected_errnos(real_trace) == []


def test_simulated_test_guest_shows_what_the_real_kernel_shows_step_for_step(
        real_trace: list[scenario.Observation], sim_trace: list[scenario.Observation]) -> None:
    problems = scenario.differences(real_trace, sim_trace)
    assert not problems, "the simulated host differs from the kernel:\n" + "\n".join(problems)


def test_recorded_real_trace_the_host_tier_uses_is_current(
        real_trace: list[scenario.Observation]) -> None:
    recorded = scenario.from_json(scenario.REAL_TRACE.read_text())
    problems = scenario.differences(real_trace, recorded, ("this kernel", "the recording"))
    assert not problems, (
        f"{scenario.REAL_TRACE} is out of date: copy real-trace.json from this run's "
        "results folder (python -m tests.vm.run --keep -k conformance) over it:\n"
        + "\n".join(problems))
