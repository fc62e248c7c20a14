"""A process holding a VFIO group or device: exclusivity, the /proc scan, blocked unbind."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from vfiod.errors import HostWriteTimeout
from vfiod.host.real import RealHost

from .. import layout
from . import pci, vfio_api
from .vfio_holder import Holder


@pytest.fixture
def nic_on_vfio(host: RealHost) -> int:
    """The NIC on vfio-pci; its group number."""
    pci.load_vfio_pci(host)
    pci.bind_to_vfio(host, layout.NIC)
    assert pci.driver_of(host, layout.NIC) == "vfio-pci"
    return pci.group_of(host, layout.NIC)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    try:
        yield started
    finally:
        for holder in started:
            holder.stop()


def test_second_open_of_a_group_is_ebusy(nic_on_vfio: int) -> None:
    first = vfio_api.open_group(nic_on_vfio)
    try:
        with pytest.raises(OSError) as failure:
            vfio_api.open_group(nic_on_vfio)
        assert failure.value.errno == errno.EBUSY
    finally:
        os.close(first)


def test_container_node_is_not_exclusive(nic_on_vfio: int) -> None:
    fds = [os.open("/dev/vfio/vfio", os.O_RDWR) for _ in range(2)]
    for fd in fds:
        os.close(fd)


def test_proc_scan_finds_the_process_holding_the_group(
        host: RealHost, nic_on_vfio: int, holders: list[Holder]) -> None:
    holder = Holder(nic_on_vfio)
    holders.append(holder)
    assert holder.reply == "ready"
    node = f"/dev/vfio/{nic_on_vfio}"
    assert [p.pid for p in host.holders([node]).get(node, [])] == [holder.pid]


def test_holding_only_the_group_does_not_block_unbind(
        host: RealHost, nic_on_vfio: int, holders: list[Holder]) -> None:
    holder = Holder(nic_on_vfio)
    holders.append(holder)
    assert holder.reply == "ready"
    host.write_attr(pci.attr(layout.NIC, "driver/unbind"), layout.NIC, timeout=5)
    assert pci.driver_of(host, layout.NIC) is None


def test_unbind_blocks_while_a_device_fd_is_held_and_finishes_when_the_holder_exits(
        host: RealHost, nic_on_vfio: int, holders: list[Holder]) -> None:
    holder = Holder(nic_on_vfio, layout.NIC)
    holders.append(holder)
    assert holder.reply == "ready"
    with pytest.raises(HostWriteTimeout):
        host.write_attr(pci.attr(layout.NIC, "driver/unbind"), layout.NIC, timeout=1.5)
    # While the kernel waits, the driver link already reads empty.
    assert pci.driver_of(host, layout.NIC) is None
    node = f"/dev/vfio/{nic_on_vfio}"
    assert host.exists(node)
    holder.stop()
    # The blocked unbind completes: the group's last device left vfio-pci.
    assert pci.wait_until(lambda: not host.exists(node), timeout=10)


def test_group_with_only_some_endpoints_on_vfio_is_not_viable(host: RealHost) -> None:
    pci.load_vfio_pci(host)
    pci.bind_to_vfio(host, layout.VGA)  # its HDA sibling stays on snd_hda_intel
    group_fd = vfio_api.open_group(pci.group_of(host, layout.VGA))
    try:
        assert not vfio_api.group_viable(group_fd)
        with pytest.raises(OSError) as failure:
            vfio_api.attach_container(group_fd)
        assert failure.value.errno == errno.EPERM
    finally:
        os.close(group_fd)


def test_group_with_every_endpoint_on_vfio_is_viable(host: RealHost) -> None:
    pci.load_vfio_pci(host)
    pci.bind_to_vfio(host, layout.VGA)
    pci.bind_to_vfio(host, layout.HDA)
    group_fd = vfio_api.open_group(pci.group_of(host, layout.VGA))
    try:
        assert vfio_api.group_viable(group_fd)
    finally:
        os.close(group_fd)
