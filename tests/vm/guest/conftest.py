"""Fixtures for the tests that run INSIDE the QEMU test guest, against its real kernel.

These tests unbind, rebind and reset PCI devices and load modules. They refuse to run
unless the kernel was booted with the test-guest marker (tests/vm/marker.py), which
only tests/vm/run.py puts there.

Adding a scenario is adding a ``test_*.py`` file here. Every test gets:
- ``host``: a RealHost rooted at ``/`` (the guest's own /sys, /dev, /proc);
- the layout devices put back afterwards (driver, driver_override, reset_method), and
  the test fails if that is impossible, so no test depends on another's leftovers;
- ``guest_vfiod``, on request: vfiod on this kernel (no --simulate) on a private bus,
  one for the session (started by the first test that asks, stopped at the end).
Addresses come from tests/vm/layout.py (``layout.NIC``, ``layout.VGA``, ...).

Some changes only a reboot undoes: the GPU-like slot's functions removed and rescanned
come back in new IOMMU groups, and ``default`` written to the VGA's reset_method drops
its bus reset while the HDA shares the bus. Tests that cause them are marked
``alters_slot`` and run after every other test, in their own order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ..marker import GUEST_MARKER, in_test_guest

if TYPE_CHECKING:
    from vfiod.host.real import RealHost

    from .daemon import GuestVfiod

REFUSED = 4  # pytest's usage-error code: this suite was started in the wrong place


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run anywhere but in the test guest."""
    if not in_test_guest():
        pytest.exit(
            f"tests/vm/guest runs only inside the QEMU test guest ({GUEST_MARKER} is not "
            "on /proc/cmdline): use `python -m tests.vm.run`", returncode=REFUSED)
    config.addinivalue_line(
        "markers", "alters_slot: leaves the GPU-like slot as only a reboot undoes; "
                   "runs after every other test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs against the guest's real kernel; alters_slot ones last."""
    for item in items:
        item.add_marker(pytest.mark.vm)
    last = [item for item in items if item.get_closest_marker("alters_slot")]
    items[:] = [item for item in items if item not in last] + last


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The times the QEMU guest tests measured, one line a scenario."""
    from .timings import lines

    measured = lines()
    if measured:
        terminalreporter.section("measured times")
        for line in measured:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def udevd_stopped() -> Iterator[None]:
    """udevd stopped for a module: RealHost's event source reads the kernel's netlink
    group then, in the kernel's own order."""
    from . import udev

    udev.settle()
    udev.stop()
    try:
        yield
    finally:
        udev.start()


@pytest.fixture(scope="session")
def host() -> Iterator[RealHost]:
    """The guest's own kernel, through the host boundary vfiod uses."""
    from vfiod.host.real import RealHost

    real = RealHost("/")
    try:
        yield real
    finally:
        real.close()


@pytest.fixture(scope="session")
def baseline(host: RealHost) -> dict[str, tuple[str | None, str | None]]:
    """Each layout device's driver and reset_method as the guest booted."""
    from .. import layout
    from . import pci

    return {address: (pci.driver_of(host, address),
                      host.read_text(pci.attr(address, "reset_method")))
            for address in layout.ALL_FUNCTIONS}


@pytest.fixture(scope="session")
def guest_vfiod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestVfiod]:
    """vfiod on this guest's kernel, on a private bus; its log goes to the results."""
    import os
    import shutil

    from vfiod.privatebus import PrivateBus

    from .daemon import GuestVfiod

    with PrivateBus() as bus:
        daemon = GuestVfiod(bus, tmp_path_factory.mktemp("vfiod"))
        try:
            yield daemon.start()
        finally:
            daemon.stop()
            results = os.environ.get("VFIOD_VM_RESULTS")
            if results and daemon.log_path.exists():
                shutil.copy(daemon.log_path, os.path.join(results, "vfiod.log"))
                with open(os.path.join(results, "vfiod.log"), "a") as log:
                    log.write("starts took " + ", ".join(
                        f"{t:.1f} s" for t in daemon.start_times) + "\n")


@pytest.fixture(autouse=True)
def restore_devices(host: RealHost,
                    baseline: dict[str, tuple[str | None, str | None]]) -> Iterator[None]:
    """Put every layout device back the way it booted once the test is done."""
    yield
    from . import pci

    problems = []
    for address, (driver, _) in baseline.items():
        if pci.override_of(host, address) is not None or pci.driver_of(host, address) != driver:
            pci.return_to_host(host, address)
            pci.wait_until(lambda a=address, d=driver: pci.driver_of(host, a) == d)
    for address, (_, methods) in baseline.items():
        if methods is not None and host.read_text(pci.attr(address, "reset_method")) != methods:
            restore_reset_methods(host, address)
    for address, (driver, methods) in baseline.items():
        if pci.driver_of(host, address) != driver:
            problems.append(f"{address} is on {pci.driver_of(host, address)}, not {driver}")
        listed = host.read_text(pci.attr(address, "reset_method"))
        if listed != methods:
            problems.append(f"{address} lists reset methods {listed!r}, not {methods!r}")
    if problems:
        pytest.fail("could not restore the layout: " + "; ".join(problems))


def restore_reset_methods(host: RealHost, address: str) -> None:
    """Write ``default`` to the device's reset_method, alone on its bus if need be.

    The kernel probes every method again on ``default``: the VGA function's bus reset
    fails its probe while the HDA function shares the bus, and would vanish from the
    list. With the other functions of the bus removed for the moment, it passes; a
    rescan brings them back, in new IOMMU groups (only alters_slot tests get here).
    """
    from . import pci

    host.write_attr(pci.attr(address, "reset_method"), "default")
    bus = address.rsplit(":", 1)[0]
    others = [a for a in pci_functions(host) if a.startswith(bus + ":") and a != address]
    methods = host.read_text(pci.attr(address, "reset_method"))
    if not others or methods:
        return
    drivers = {a: pci.driver_of(host, a) for a in others}
    for other in others:
        host.write_attr(pci.attr(other, "remove"), "1")
    host.write_attr(pci.attr(address, "reset_method"), "default")
    host.write_attr("/sys/bus/pci/rescan", "1")
    for other, driver in drivers.items():
        pci.wait_until(lambda a=other, d=driver: pci.driver_of(host, a) == d, timeout=10)


def pci_functions(host: RealHost) -> list[str]:
    """Every PCI function the guest has now."""
    return host.listdir("/sys/bus/pci/devices")
