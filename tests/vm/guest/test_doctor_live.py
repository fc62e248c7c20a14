"""`vfioctl doctor`'s host-wide checks against the guest's real kernel (intel-iommu,
intremap=on): what the simulated host renders for them is what this kernel shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vfiod.doctor import run_checks

if TYPE_CHECKING:
    from vfiod.host.real import RealHost


def test_doctor_sees_the_iommu_and_interrupt_remapping(host: RealHost) -> None:
    checks = {c.id: c for c in run_checks(host, None)}
    assert checks["iommu"].status == "ok", checks["iommu"]
    assert checks["intremap"].status == "ok", checks["intremap"]
    assert "IR-PCI-MSI" in checks["intremap"].summary


def test_the_iommu_units_ecap_says_it_can_remap(host: RealHost) -> None:
    from vfiod.doctor import ECAP_IR
    from vfiod.host import paths

    units = host.listdir(paths.IOMMU_UNITS)
    assert units
    for unit in units:
        ecap = host.read_int(paths.iommu_unit_file(unit, "ecap"), 16)
        assert ecap is not None and ecap & ECAP_IR, (unit, ecap)
