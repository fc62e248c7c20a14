"""Fixtures for the tests that run INSIDE the QEMU test guest, against its real kernel.

These tests unbind, rebind and reset PCI devices and load modules. They refuse to run
unless the kernel was booted with the test-guest marker (tests/vm/marker.py), which
only tests/vm/run.py puts there.

Adding a scenario is adding a ``test_*.py`` file here. Every test gets:
- ``host``: a RealHost rooted at ``/`` (the guest's own /sys, /dev, /proc);
- the layout devices put back afterwards (driver, driver_override, reset_method), and
  the test fails if that is impossible, so no test depends on another's leftovers.
Addresses come from tests/vm/layout.py (``layout.NIC``, ``layout.VGA``, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ..marker import GUEST_MARKER, in_test_guest

if TYPE_CHECKING:
    from vfiod.host.real import RealHost

REFUSED = 4  # pytest's usage-error code: this suite was started in the wrong place


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run anywhere but in the test guest."""
    if not in_test_guest():
        pytest.exit(
            f"tests/vm/guest runs only inside the QEMU test guest ({GUEST_MARKER} is not "
            "on /proc/cmdline): use `python -m tests.vm.run`", returncode=REFUSED)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs against the guest's real kernel."""
    for item in items:
        item.add_marker(pytest.mark.vm)


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


@pytest.fixture(autouse=True)
def restore_devices(host: RealHost,
                    baseline: dict[str, tuple[str | None, str | None]]) -> Iterator[None]:
    """Put every layout device back the way it booted once the test is done."""
    yield
    from . import pci

    problems = []
    for address, (driver, methods) in baseline.items():
        if methods is not None and host.read_text(pci.attr(address, "reset_method")) != methods:
            host.write_attr(pci.attr(address, "reset_method"), "default")
        if pci.override_of(host, address) is not None or pci.driver_of(host, address) != driver:
            pci.return_to_host(host, address)
            pci.wait_until(lambda a=address, d=driver: pci.driver_of(host, a) == d)
        if pci.driver_of(host, address) != driver:
            problems.append(f"{address} is on {pci.driver_of(host, address)}, not {driver}")
    if problems:
        pytest.fail("could not restore the layout: " + "; ".join(problems))
