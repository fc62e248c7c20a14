"""The conformance scenario on the simulated test guest, in the host tier (no QEMU).

The guest tier runs tests/vm/scenario.py against a real kernel and the simulation side
by side; here the simulation alone is held to the real kernel's trace as the guest last
recorded it (tests/vm/data/real-trace.json), so a change of vfiod/sim that breaks
conformance fails on every host run, not only in the guest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vfiod.sim import PROFILES, SimHost

from . import layout, scenario


@pytest.fixture(scope="module")
def sim_trace() -> Iterator[list[scenario.Observation]]:
    with SimHost("test-guest") as sim:
        yield scenario.run(sim)


def test_simulated_test_guest_shows_what_the_recorded_real_kernel_showed(
        sim_trace: list[scenario.Observation]) -> None:
    real = scenario.from_json(scenario.REAL_TRACE.read_text())
    problems = scenario.differences(real, sim_trace, ("the real kernel", "the simulation"))
    assert not problems, "\n".join(problems)


def test_every_write_on_the_simulated_guest_fails_with_the_errno_kernel_facts_gives(
        sim_trace: list[scenario.Observation]) -> None:
    assert scenario.unexpected_errnos(sim_trace) == []


def test_scenario_covers_every_kernel_facts_errno() -> None:
    # ENODEV, ENOENT, EBUSY, EINVAL and EEXIST of bad writes, ENOTTY of failed resets.
    assert {s.errno for s in scenario.STEPS} >= {0, 2, 16, 17, 19, 22, 25}


def test_test_guest_profile_puts_each_layout_function_behind_its_root_port() -> None:
    specs = {d.address: d for d in PROFILES["test-guest"].devices}
    for port in layout.PORTS:
        assert specs[port.address].host_driver == "pcieport"
        for function in port.functions:
            assert specs[port.address_of(function)].parent == port.address


def test_test_guest_profile_has_the_guests_9p_devices_and_sentinel() -> None:
    specs = {d.address: d for d in PROFILES["test-guest"].devices}
    assert {layout.HOSTROOT_9P, layout.RESULTS_9P, scenario.SENTINEL} <= set(specs)
