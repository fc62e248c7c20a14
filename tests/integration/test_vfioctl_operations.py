"""bind, unbind and reset through vfioctl: what moved is printed, and it really moved."""

from __future__ import annotations

from collections.abc import Callable

from .helpers import Vfiod, sim_driver
from .vfioctl_helpers import vfioctl

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"


def test_bind_and_unbind_round_trip_of_the_guest_gpu(vfiod: Vfiod) -> None:
    bound = vfioctl(vfiod.address, "bind", "06:00.0")
    assert bound.returncode == 0, bound.stderr
    lines = bound.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [GPU, AUDIO]
    assert lines[0].endswith("nvidia -> vfio-pci") and "GeForce GTX 1080 Ti" in lines[0]
    assert lines[1].endswith("snd_hda_intel -> vfio-pci")
    assert (sim_driver(vfiod.sim_root, GPU), sim_driver(vfiod.sim_root, AUDIO)) == \
        ("vfio-pci", "vfio-pci")
    assert {vfiod.status()[a]["state"] for a in (GPU, AUDIO)} == {"vfio"}

    unbound = vfioctl(vfiod.address, "unbind", "06:00.0")
    assert unbound.returncode == 0, unbound.stderr
    lines = unbound.stdout.splitlines()
    assert lines[0].startswith(GPU) and lines[0].endswith("vfio-pci -> nvidia")
    assert lines[1].startswith(AUDIO) and lines[1].endswith("vfio-pci -> snd_hda_intel")
    assert (sim_driver(vfiod.sim_root, GPU), sim_driver(vfiod.sim_root, AUDIO)) == \
        ("nvidia", "snd_hda_intel")


def test_bind_of_a_group_already_on_vfio_pci_says_nothing_moved(vfiod: Vfiod) -> None:
    assert vfioctl(vfiod.address, "bind", GPU).returncode == 0
    again = vfioctl(vfiod.address, "bind", "06:00.1")
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{AUDIO}: already on vfio-pci: nothing to do (driver vfio-pci)\n"


def test_unbind_of_a_device_on_its_host_driver_says_nothing_moved(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "unbind", GPU)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{GPU}: not on vfio-pci: nothing to do (driver nvidia)\n"


def test_bind_by_a_name_from_the_config(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config='[[device]]\nmatch = "0000:00:1b.0"\nname = "audio"\n').start()
    result = vfioctl(daemon.address, "bind", "audio")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0000:00:1b.0  ")
    assert result.stdout.rstrip().endswith("snd_hda_intel -> vfio-pci")
    assert sim_driver(daemon.sim_root, "0000:00:1b.0") == "vfio-pci"


def test_reset_prints_the_method_that_worked(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "reset", "00:1b.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0000:00:1b.0  ")
    assert result.stdout.rstrip().endswith("reset (flr), healthy")


def test_vfioctl_finds_the_bus_through_dbus_system_bus_address(vfiod: Vfiod) -> None:
    result = vfioctl(None, "status", "--json",
                     env={"DBUS_SYSTEM_BUS_ADDRESS": vfiod.address})
    assert result.returncode == 0, result.stderr
    assert GPU in result.stdout


def test_session_talks_to_the_bus_dbus_session_bus_address_names(vfiod: Vfiod) -> None:
    result = vfioctl(None, "--session", "status", "06:00.0", "--json",
                     env={"DBUS_SESSION_BUS_ADDRESS": vfiod.address,
                          "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus"})
    assert result.returncode == 0, result.stderr
    assert GPU in result.stdout
