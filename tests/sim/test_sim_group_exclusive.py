"""A group is exclusive, as on the real kernel (kernel-facts.md, "Guest in use"): a second
open of /dev/vfio/N fails EBUSY while anyone holds the group node, a device fd got
through it (also once the group fd is closed), or a device's iommufd cdev."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator

import pytest
from simtest import GPU, TEST_GUEST_NIC, dev, guest_nic_on_vfio, to_vfio

from vfiod.errors import HostWriteTimeout
from vfiod.host import paths
from vfiod.sim import SimHost

NIC_61 = TEST_GUEST_NIC  # alone in IOMMU group 10


@pytest.fixture
def guest_ready(sim: SimHost) -> SimHost:
    """seed-x99 (a kernel with VFIO cdevs) with the guest's GPU on vfio-pci."""
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    return sim


@pytest.fixture
def kernel61() -> Iterator[SimHost]:
    """The 6.1 test guest (no cdevs: a device fd is an anonymous inode), NIC on vfio-pci."""
    with guest_nic_on_vfio() as host:
        yield host


def open_errno(host: SimHost, group: int) -> int:
    """0 when vfiod may open the group (closing it again), else the errno."""
    try:
        fd = host.open_group(group)
    except OSError as exc:
        return exc.errno or 0
    host.close_group(fd)
    return 0


def test_a_free_group_opens(guest_ready: SimHost) -> None:
    assert open_errno(guest_ready, 31) == 0


def test_group_held_through_its_node_is_ebusy(guest_ready: SimHost) -> None:
    with guest_ready.spawn_holder(["/dev/vfio/31"]):
        assert open_errno(guest_ready, 31) == errno.EBUSY
    assert open_errno(guest_ready, 31) == 0


def test_group_held_only_through_a_device_fd_is_ebusy(kernel61: SimHost) -> None:
    # The group fd was closed (or the fd came over a socket): no /dev path is open.
    with kernel61.spawn_holder([], device_fds=[NIC_61]):
        assert kernel61.holders_under("/dev/vfio") == {}
        assert open_errno(kernel61, 10) == errno.EBUSY


def test_group_held_only_through_the_iommufd_cdev_is_ebusy(guest_ready: SimHost) -> None:
    with guest_ready.spawn_holder([], device_fds=[GPU]):
        assert open_errno(guest_ready, 31) == errno.EBUSY


def test_a_guest_cannot_open_a_group_vfiod_holds(guest_ready: SimHost) -> None:
    fd = guest_ready.open_group(31)
    try:
        with pytest.raises(OSError) as refused:
            guest_ready.spawn_holder(["/dev/vfio/31"])
        assert refused.value.errno == errno.EBUSY
        with pytest.raises(OSError) as refused:
            guest_ready.spawn_holder([], device_fds=[GPU])
        assert refused.value.errno == errno.EBUSY
    finally:
        guest_ready.close_group(fd)
    with guest_ready.spawn_holder(["/dev/vfio/31"]):
        pass


def test_a_second_open_by_vfiod_itself_is_ebusy(guest_ready: SimHost) -> None:
    fd = guest_ready.open_group(31)
    try:
        assert open_errno(guest_ready, 31) == errno.EBUSY
    finally:
        guest_ready.close_group(fd)


def test_a_61_device_fd_shows_as_the_anonymous_inode(kernel61: SimHost) -> None:
    with kernel61.spawn_holder([], device_fds=[NIC_61]) as guest:
        found = kernel61.holders([paths.VFIO_DEVICE_FD])
        assert [p.pid for p in found[paths.VFIO_DEVICE_FD]] == [guest.pid]


def test_driver_override_read_waits_while_an_unbind_waits_for_the_holder(
        kernel61: SimHost) -> None:
    guest = kernel61.spawn_holder([], device_fds=[NIC_61])
    with pytest.raises(HostWriteTimeout):
        kernel61.write_attr(dev(NIC_61, "driver/unbind"), NIC_61, timeout=0.2)
    read: list[str | None] = []
    reader = threading.Thread(
        target=lambda: read.append(kernel61.read_text(dev(NIC_61, "driver_override"))),
        daemon=True)
    reader.start()
    reader.join(0.5)
    assert reader.is_alive()  # blocked like the real kernel's device_lock
    guest.close()
    reader.join(3.0)
    assert not reader.is_alive() and read == ["vfio-pci"]
