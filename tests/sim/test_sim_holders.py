"""Holders are real processes; a held device fd makes unbind block (kernel-facts.md)."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
import time

import pytest
from simtest import GPU, dev, driver_of, to_vfio, wait_for, write_errno

from vfiod.errors import HostWriteTimeout
from vfiod.sim import SimHost


@pytest.fixture
def guest_ready(sim: SimHost) -> SimHost:
    """The guest's GPU on vfio-pci."""
    sim.load_module("vfio-pci")
    to_vfio(sim, GPU)
    return sim


def test_holder_is_found_by_host_holders_with_its_name(guest_ready: SimHost) -> None:
    with guest_ready.spawn_holder(["/dev/vfio/31"]) as qemu:
        found = guest_ready.holders(["/dev/vfio/31"])["/dev/vfio/31"]
        assert [str(p) for p in found] == [f"qemu-system-x86 (pid {qemu.pid})"]
    assert guest_ready.holders(["/dev/vfio/31"]) == {}


def test_holders_under_dev_vfio_lists_group_and_device_fds(guest_ready: SimHost) -> None:
    with guest_ready.spawn_holder(["/dev/vfio/vfio", "/dev/vfio/31"], device_fds=[GPU]):
        held = guest_ready.holders_under("/dev/vfio")
        assert {"/dev/vfio/vfio", "/dev/vfio/31", "/dev/vfio/devices/vfio0"} <= set(held)


def test_desktop_session_holds_the_boot_gpu_card(sim: SimHost) -> None:
    (xorg,) = sim.holders(["/dev/dri/card0"])["/dev/dri/card0"]
    assert xorg.comm == "Xorg" and sim.desktop is not None and xorg.pid == sim.desktop.pid
    assert sim.holders(["/dev/nvidia0"])["/dev/nvidia0"][0].pid == xorg.pid


def test_unbind_blocks_while_device_fd_is_held_and_completes_when_holder_exits(
        guest_ready: SimHost) -> None:
    qemu = guest_ready.spawn_holder(["/dev/vfio/31"], device_fds=[GPU])
    done = threading.Event()
    result: list[int] = []

    def unbind() -> None:
        result.append(write_errno(guest_ready, "/sys/bus/pci/drivers/vfio-pci/unbind", GPU))
        done.set()

    threading.Thread(target=unbind, daemon=True).start()
    assert not done.wait(0.3)  # still blocked in the "kernel"
    qemu.close()
    assert done.wait(2.0)
    assert result == [0] and driver_of(guest_ready, GPU) is None
    assert not guest_ready.exists("/dev/vfio/31")


def test_driver_link_is_gone_at_once_while_unbind_blocks(guest_ready: SimHost) -> None:
    with guest_ready.spawn_holder([], device_fds=[GPU]):
        with pytest.raises(HostWriteTimeout):
            guest_ready.write_attr("/sys/bus/pci/drivers/vfio-pci/unbind", GPU, timeout=0.2)
        assert driver_of(guest_ready, GPU) is None
        assert guest_ready.exists("/dev/vfio/31")  # the group stays until the fd closes
    assert wait_for(lambda: not guest_ready.exists("/dev/vfio/31"), 2.0)


def test_other_writes_to_a_blocked_device_wait_for_it(guest_ready: SimHost) -> None:
    with guest_ready.spawn_holder([], device_fds=[GPU]) as qemu:
        with pytest.raises(HostWriteTimeout):
            guest_ready.write_attr("/sys/bus/pci/drivers/vfio-pci/unbind", GPU, timeout=0.2)
        with pytest.raises(HostWriteTimeout):
            guest_ready.write_attr(dev(GPU, "driver_override"), "\n", timeout=0.2)
        qemu.close()
    assert wait_for(lambda: guest_ready.read_text(dev(GPU, "driver_override")) == "(null)")


def test_other_devices_are_not_blocked_by_a_blocked_unbind(guest_ready: SimHost) -> None:
    with guest_ready.spawn_holder([], device_fds=[GPU]):
        with pytest.raises(HostWriteTimeout):
            guest_ready.write_attr("/sys/bus/pci/drivers/vfio-pci/unbind", GPU, timeout=0.2)
        assert write_errno(guest_ready, dev("0000:09:00.0", "driver/unbind"),
                           "0000:09:00.0") == 0


def test_holding_only_the_group_node_does_not_block_unbind(guest_ready: SimHost) -> None:
    with guest_ready.spawn_holder(["/dev/vfio/31"]):
        start = time.monotonic()
        assert write_errno(guest_ready, "/sys/bus/pci/drivers/vfio-pci/unbind", GPU) == 0
        assert time.monotonic() - start < 1.0


def test_device_fd_of_device_not_on_vfio_pci_is_enodev(sim: SimHost) -> None:
    with pytest.raises(OSError) as failed:
        sim.spawn_holder([], device_fds=[GPU])
    assert failed.value.errno == errno.ENODEV


def test_holder_of_missing_path_is_enoent(sim: SimHost) -> None:
    with pytest.raises(OSError) as failed:
        sim.spawn_holder(["/dev/vfio/31"])
    assert failed.value.errno == errno.ENOENT


def test_close_ends_the_holders_it_started() -> None:
    host = SimHost()
    host.load_module("vfio-pci")
    to_vfio(host, GPU)
    qemu = host.spawn_holder(["/dev/vfio/31"])
    xorg = host.desktop
    host.close()
    assert not qemu.running and xorg is not None and not xorg.running


def test_holder_exits_when_its_parent_dies(sim: SimHost) -> None:
    script = ("import sys; from vfiod.sim import spawn_holder; "
              "h = spawn_holder(sys.argv[1], ['/dev/dri/card1'], comm='orphan'); "
              "print(h.pid, flush=True)")
    out = subprocess.run([sys.executable, "-c", script, str(sim.root)], check=True,
                         capture_output=True, text=True, timeout=30)
    pid = int(out.stdout)
    assert wait_for(lambda: not sim.holders(["/dev/dri/card1"]), 5.0), pid
