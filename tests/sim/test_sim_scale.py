"""The scale profile: thousands of SR-IOV functions, built in seconds."""

from __future__ import annotations

import time

from simtest import dev, driver_of, to_vfio

from vfiod.sim import SimHost


def test_scale_profile_builds_over_4096_functions_each_in_its_own_group() -> None:
    start = time.monotonic()
    host = SimHost("scale")
    built = time.monotonic() - start
    try:
        devices = host.listdir("/sys/bus/pci/devices")
        vfs = [a for a in devices if host.exists(dev(a, "physfn"))]
        assert len(devices) >= 4096 and len(vfs) == 64 * 63
        groups = host.listdir("/sys/kernel/iommu_groups")
        assert len(groups) == len(devices)
        assert built < 30, f"building took {built:.1f} s"
        print(f"scale: {len(devices)} functions built in {built:.2f} s")
        host.load_module("vfio-pci")
        to_vfio(host, vfs[100])
        assert driver_of(host, vfs[100]) == "vfio-pci"
    finally:
        host.close()


def test_a_sized_scale_profile_has_exactly_the_functions_its_name_asks_for() -> None:
    with SimHost("scale-30") as host:
        devices = host.listdir("/sys/bus/pci/devices")
        vfs = [a for a in devices if host.exists(dev(a, "physfn"))]
        assert len(devices) == 30
        assert len(vfs) == 27  # the host bridge, one root port and one PF besides
        assert len(host.listdir("/sys/kernel/iommu_groups")) == 30


def test_sized_scale_profiles_spread_their_functions_over_as_few_pfs_as_fit() -> None:
    from vfiod.sim.profiles import PROFILES, scale_vfs

    assert scale_vfs(4096) == [63] * 63  # exactly full: 1 + 63 * (port + PF + 63 VFs)
    assert sum(scale_vfs(1000)) + 2 * len(scale_vfs(1000)) + 1 == 1000
    assert max(scale_vfs(1000)) - min(scale_vfs(1000)) <= 1
    assert len(PROFILES["scale-1000"].devices) == 1000


def test_a_scale_name_without_a_usable_size_is_no_profile() -> None:
    from vfiod.sim.profiles import PROFILES

    for name in ("scale-", "scale-0", "scale-2", "scale-x", "scale-015", "scale-99999"):
        assert name not in PROFILES, name
    assert not any(name.startswith("scale-") for name in PROFILES)  # never listed
