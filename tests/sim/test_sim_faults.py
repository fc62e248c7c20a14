"""Fault injection and the write log."""

from __future__ import annotations

import errno
import time

import pytest
from simtest import GPU, dev, driver_of, write_errno

from vfiod.sim import SimHost, SimulatedCrash


def test_fail_makes_next_matching_write_fail_without_effect(sim: SimHost) -> None:
    sim.faults.fail("/sys/bus/pci/devices/*/driver_override", errno.EIO)
    assert write_errno(sim, dev(GPU, "driver_override"), "vfio-pci") == errno.EIO
    assert sim.read_text(dev(GPU, "driver_override")) == "(null)"
    assert write_errno(sim, dev(GPU, "driver_override"), "vfio-pci") == 0


def test_fail_times_counts_matching_writes(sim: SimHost) -> None:
    sim.faults.fail("/sys/bus/pci/drivers_probe", errno.EAGAIN, times=2)
    results = [write_errno(sim, "/sys/bus/pci/drivers_probe", GPU) for _ in range(3)]
    assert results == [errno.EAGAIN, errno.EAGAIN, 0]


def test_fail_glob_matches_the_path_a_link_leads_to(sim: SimHost) -> None:
    sim.faults.fail("/sys/bus/pci/drivers/*/unbind", errno.EBUSY)
    assert write_errno(sim, dev(GPU, "driver/unbind"), GPU) == errno.EBUSY
    assert driver_of(sim, GPU) == "nvidia"


def test_crash_after_completes_the_write_then_raises(sim: SimHost) -> None:
    sim.faults.crash_after(1)
    sim.write_attr(dev(GPU, "driver_override"), "vfio-pci")
    with pytest.raises(SimulatedCrash):
        sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert driver_of(sim, GPU) is None


def test_crash_before_raises_without_effect(sim: SimHost) -> None:
    sim.faults.crash_before(0)
    with pytest.raises(SimulatedCrash):
        sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    assert driver_of(sim, GPU) == "nvidia"


def test_simulated_crash_is_not_an_exception(sim: SimHost) -> None:
    assert not issubclass(SimulatedCrash, Exception)
    assert issubclass(SimulatedCrash, BaseException)


def test_clear_forgets_planned_faults(sim: SimHost) -> None:
    sim.faults.fail("*", errno.EIO)
    sim.faults.crash_before(0)
    sim.faults.clear()
    assert write_errno(sim, dev(GPU, "driver_override"), "x") == 0


def test_delay_slows_matching_writes(sim: SimHost) -> None:
    sim.faults.delay("/sys/bus/pci/drivers_probe", 0.2, times=1)
    start = time.monotonic()
    sim.write_attr("/sys/bus/pci/drivers_probe", GPU)
    assert time.monotonic() - start >= 0.2


def test_write_log_records_every_write_with_its_errno(sim: SimHost) -> None:
    sim.faults.fail("/sys/bus/pci/drivers_probe", errno.EIO)
    write_errno(sim, dev(GPU, "driver_override"), "vfio-pci")
    write_errno(sim, "/sys/bus/pci/drivers_probe", GPU)
    write_errno(sim, "/sys/bus/pci/drivers_probe", "nonsense")
    assert sim.write_log == [
        (dev(GPU, "driver_override"), "vfio-pci", 0),
        ("/sys/bus/pci/drivers_probe", GPU, errno.EIO),
        ("/sys/bus/pci/drivers_probe", "nonsense", errno.ENODEV),
    ]
