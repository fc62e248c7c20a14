"""The whole stack on a real kernel: vfiod (no --simulate) in the guest, real clients.

vfiod runs on a private bus with the project's bus policy, a state dir and an empty
config of its own (conftest.py's ``guest_vfiod``); it manages the guest's own PCI
devices through RealHost("/"). The autouse fixture of conftest.py puts the devices back
after each test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.host.real import RealHost

from .. import layout
from . import pci
from .daemon import (
    GuestVfiod,
    device_changed_after,
    error,
    error_of,
    manager_call,
    options,
    returned,
    run,
    value,
    wait_until,
)
from .vfio_holder import Holder

VGA, HDA, NIC, GPU = layout.VGA, layout.HDA, layout.NIC, layout.VIRTIO_GPU
SLOT = [VGA, HDA]
BOOT_VGA_GUARD = "it is the boot VGA and the framebuffer console is on it"


@pytest.fixture
def vfiod(guest_vfiod: GuestVfiod) -> GuestVfiod:
    """The session's vfiod on this guest's kernel."""
    return guest_vfiod


def nic_interface(host: RealHost) -> str:
    """The NIC's network interface (enp2s0, or eth0 after a rescan without udevd)."""
    (name,) = host.listdir(pci.attr(NIC, "net"))
    return name


@pytest.fixture
def nic_up(host: RealHost) -> Iterator[str]:
    """The NIC's interface up (its link comes up on QEMU's user network); down after."""
    name = nic_interface(host)
    subprocess.run(["ip", "link", "set", name, "up"], check=True, timeout=30)
    try:
        wait_until(lambda: host.read_text(f"/sys/class/net/{name}/operstate") == "up", 10,
                   f"{name} up")
        yield name
    finally:
        if host.exists(f"/sys/class/net/{name}"):
            subprocess.run(["ip", "link", "set", name, "down"], check=False, timeout=30)


def test_slot_bind_is_refused_while_the_console_is_on_the_boot_vga(
        host: RealHost, vfiod: GuestVfiod) -> None:
    message = error_of(vfiod.call("Bind", "sa{sv}", VGA, "0"))
    assert BOOT_VGA_GUARD in message and "force" in message
    assert [pci.driver_of(host, a) for a in SLOT] == ["bochs-drm", "snd_hda_intel"]


def test_bind_moves_both_functions_of_the_slot_and_unbind_returns_them(
        host: RealHost, vfiod: GuestVfiod) -> None:
    node = f"/dev/vfio/{pci.group_of(host, VGA)}"
    moved = returned(vfiod.call("Bind", "sa{sv}", VGA, "1", "force", "b", "true"))
    assert moved == SLOT
    assert [pci.driver_of(host, a) for a in SLOT] == ["vfio-pci", "vfio-pci"]
    assert host.exists(node)
    assert [vfiod.status()[a]["state"] for a in SLOT] == ["vfio", "vfio"]

    moved = returned(vfiod.call("Unbind", "sa{sv}", VGA, "0"))
    assert moved == SLOT
    assert [pci.driver_of(host, a) for a in SLOT] == ["bochs-drm", "snd_hda_intel"]
    assert not host.exists(node)
    assert [vfiod.status()[a]["state"] for a in SLOT] == ["host", "host"]


def test_bind_of_one_function_of_the_slot_is_group_not_viable(
        host: RealHost, vfiod: GuestVfiod) -> None:
    reply, _ = run(manager_call(vfiod.address, "Bind", "sa{sv}",
                                [VGA, options(group=False, force=True)]))
    name, message = error(reply)
    assert name == "org.vfiod1.Error.GroupNotViable"
    assert HDA in message
    assert [pci.driver_of(host, a) for a in SLOT] == ["bochs-drm", "snd_hda_intel"]


def test_vfioctl_refuses_the_nic_while_its_interface_is_up_and_moves_it_when_forced(
        host: RealHost, vfiod: GuestVfiod, nic_up: str) -> None:
    refused = vfiod.vfioctl("bind", NIC)
    assert refused.returncode == 4, refused.stderr  # InUse
    assert f"network interface {nic_up} is up" in refused.stderr
    assert pci.driver_of(host, NIC) == "e1000e"

    forced = vfiod.vfioctl("bind", "--force", NIC)
    assert forced.returncode == 0, forced.stderr
    assert pci.driver_of(host, NIC) == "vfio-pci"

    back = vfiod.vfioctl("unbind", NIC)
    assert back.returncode == 0, back.stderr
    assert pci.driver_of(host, NIC) == "e1000e"


def test_unbind_while_a_process_holds_a_device_fd_fails_at_once_naming_it(
        host: RealHost, vfiod: GuestVfiod) -> None:
    assert value(run(manager_call(vfiod.address, "Bind", "sa{sv}", [NIC, {}]))[0]) == [NIC]
    holder = Holder(pci.group_of(host, NIC), NIC)  # like QEMU: group, container, device fd
    try:
        assert holder.reply == "ready"
        comm = Path(f"/proc/{holder.pid}/comm").read_text().strip()
        reply, took = run(manager_call(vfiod.address, "Unbind", "sa{sv}", [NIC, {}]))
        name, message = error(reply)
        assert name == "org.vfiod1.Error.InUse"
        assert f"{comm} (pid {holder.pid})" in message
        assert took < 1.0, f"Unbind took {took:.2f} s"
        assert pci.driver_of(host, NIC) == "vfio-pci"
    finally:
        holder.stop()
    assert value(run(manager_call(vfiod.address, "Unbind", "sa{sv}", [NIC, {}]))[0]) == [NIC]
    assert pci.driver_of(host, NIC) == "e1000e"


def test_reset_of_the_virtio_gpu_is_flr(vfiod: GuestVfiod) -> None:
    assert returned(vfiod.call("Reset", "sa{sv}", GPU, "0")) == "flr"


def test_reset_of_the_nic_is_the_first_method_the_kernel_lists(
        host: RealHost, vfiod: GuestVfiod) -> None:
    first = (host.read_text(pci.attr(NIC, "reset_method")) or "").split()[0]
    assert returned(vfiod.call("Reset", "sa{sv}", NIC, "0")) == first == "pm"


# Reset has no option that selects a method, so the bus-reset failure is tested on the
# VGA, whose only method is bus (the virtio GPU's bus reset is never reached: its flr
# works first). The daemon writes "default" to the VGA's reset_method afterwards, which
# the kernel answers by probing again and dropping bus: these run last.
@pytest.mark.alters_slot
def test_reset_of_the_vga_whose_only_method_is_a_shared_bus_reset_is_reset_failed(
        vfiod: GuestVfiod) -> None:
    reply, _ = run(manager_call(vfiod.address, "Reset", "sa{sv}", [VGA, options(force=True)]))
    name, message = error(reply)
    assert name == "org.vfiod1.Error.ResetFailed"
    assert "bus" in message


@pytest.mark.alters_slot
def test_failed_vga_reset_names_enotty_and_leaves_its_reset_methods_as_they_were(
        host: RealHost, vfiod: GuestVfiod) -> None:
    listed = host.read_text(pci.attr(VGA, "reset_method"))
    reply, _ = run(manager_call(vfiod.address, "Reset", "sa{sv}", [VGA, options(force=True)]))
    name, message = error(reply)
    assert name == "org.vfiod1.Error.ResetFailed"
    assert "ENOTTY" in message and "another function shares the bus" in message
    assert host.read_text(pci.attr(VGA, "reset_method")) == listed


def test_writes_behind_the_daemons_back_show_in_status_and_as_device_changed(
        host: RealHost, vfiod: GuestVfiod) -> None:
    pci.load_vfio_pci(host)
    _, after = run(device_changed_after(
        vfiod.address, lambda: pci.bind_to_vfio(host, NIC),
        lambda seen: (NIC, "vfio", "vfio-pci") in seen, timeout=10))
    assert after < 5.0, f"DeviceChanged came {after:.2f} s after the writes"
    row = vfiod.status()[NIC]
    assert (row["driver"], row["state"]) == ("vfio-pci", "vfio")


def test_daemon_manages_the_real_kernel_with_its_iommu(vfiod: GuestVfiod) -> None:
    def prop(name: str) -> str:
        return vfiod.busctl("get-property", "org.vfiod1", "/org/vfiod1",
                            "org.vfiod1.Manager", name).stdout.strip()

    assert (prop("Simulated"), prop("IommuEnabled")) == ("b false", "b true")
