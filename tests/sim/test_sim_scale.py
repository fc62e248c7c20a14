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
