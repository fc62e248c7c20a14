"""A kernel without VFIO device cdevs (the test guest's 6.1), as the simulation shows it.

On 6.1 /dev/vfio holds only the container and the group nodes, vfio-dev/vfioN has no
device number, and a device fd is an anonymous inode no scan of /dev finds; holding
one still makes ``unbind`` wait.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simtest import TEST_GUEST_NIC, dev, driver_of, guest_nic_on_vfio, wait_for

from vfiod.errors import HostWriteTimeout
from vfiod.sim import SimHost

NIC = TEST_GUEST_NIC  # alone in IOMMU group 10


@pytest.fixture
def guest() -> Iterator[SimHost]:
    """The simulated test guest with its NIC on vfio-pci."""
    with guest_nic_on_vfio() as host:
        yield host


def test_dev_vfio_holds_only_the_container_and_the_group_node(guest: SimHost) -> None:
    assert guest.listdir("/dev/vfio") == ["10", "vfio"]


def test_vfio_dev_class_device_has_no_device_number(guest: SimHost) -> None:
    (name,) = guest.listdir(dev(NIC, "vfio-dev"))
    assert "dev" not in guest.listdir(dev(NIC, f"vfio-dev/{name}"))
    assert guest.read_text(dev(NIC, f"vfio-dev/{name}/uevent")) == ""


def test_device_fd_is_invisible_under_dev_vfio(guest: SimHost) -> None:
    with guest.spawn_holder([], device_fds=[NIC]):
        assert guest.holders_under("/dev/vfio") == {}


def test_unbind_waits_while_a_device_fd_is_held(guest: SimHost) -> None:
    with guest.spawn_holder([], device_fds=[NIC]):
        with pytest.raises(HostWriteTimeout):
            guest.write_attr(dev(NIC, "driver/unbind"), NIC, timeout=0.2)
        assert guest.exists("/dev/vfio/10")
    assert wait_for(lambda: not guest.exists("/dev/vfio/10"), 2.0)
    assert driver_of(guest, NIC) is None
