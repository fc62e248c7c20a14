"""Direct writes to the tree's files behind the daemon's back get the same semantics."""

from __future__ import annotations

import errno
import os
import subprocess

from simtest import GPU, dev, driver_of, summary, to_vfio, wait_for

from vfiod.sim import SimHost


def shell_write(sim: SimHost, host_path: str, value: str) -> None:
    """What a user does: ``echo VALUE > $ROOT/PATH`` in a shell."""
    subprocess.run(["sh", "-c", 'echo "$1" > "$2"', "sh", value, str(sim.real_path(host_path))],
                   check=True)


def test_external_override_write_is_applied_and_file_shows_it(sim: SimHost) -> None:
    shell_write(sim, dev(GPU, "driver_override"), "vfio-pci")
    assert sim.sync_external()
    assert sim.kernel.states[GPU].override == "vfio-pci"
    assert sim.read_text(dev(GPU, "driver_override")) == "vfio-pci"


def test_external_unbind_through_driver_link_unbinds_and_empties_the_file(
        sim: SimHost) -> None:
    shell_write(sim, dev(GPU, "driver/unbind"), GPU)
    assert sim.sync_external()
    assert driver_of(sim, GPU) is None
    assert sim.read_text("/sys/bus/pci/drivers/nvidia/unbind") == ""


def test_external_vfio_sequence_gives_same_result_and_events_as_write_attr(
        sim: SimHost) -> None:
    sim.load_module("vfio-pci")
    events = sim.open_events()
    to_vfio(sim, "0000:09:00.0")
    through_host = summary(events.receive())
    shell_write(sim, dev(GPU, "driver_override"), "vfio-pci")
    shell_write(sim, dev(GPU, "driver/unbind"), GPU)
    shell_write(sim, "/sys/bus/pci/drivers_probe", GPU)
    assert sim.sync_external()
    assert driver_of(sim, GPU) == driver_of(sim, "0000:09:00.0") == "vfio-pci"
    assert summary(events.receive()) == through_host
    assert sim.exists("/dev/vfio/31")


def test_failed_external_write_is_logged_with_its_errno(sim: SimHost) -> None:
    shell_write(sim, "/sys/bus/pci/drivers_probe", "0000:42:00.0")
    assert sim.sync_external()
    assert sim.external_log == [("/sys/bus/pci/drivers_probe", "0000:42:00.0\n", errno.ENODEV)]
    assert sim.read_text("/sys/bus/pci/drivers_probe") == ""


def test_external_write_to_read_only_attribute_is_reverted(sim: SimHost) -> None:
    shell_write(sim, dev(GPU, "vendor"), "0x1234")
    assert sim.sync_external()
    assert sim.read_text(dev(GPU, "vendor")) == "0x10de"
    assert sim.external_log[-1][2] == errno.EACCES


def test_write_attr_is_applied_once_and_not_seen_as_external(sim: SimHost) -> None:
    events = sim.open_events()
    sim.write_attr(dev(GPU, "driver/unbind"), GPU)
    sim.write_attr("/sys/bus/pci/drivers_probe", GPU)
    assert sim.sync_external()
    assert sim.external_log == []
    assert [e.action for e in events.receive() if e.subsystem == "pci"] == ["unbind", "bind"]


def test_external_write_to_new_device_directory_is_watched(sim: SimHost) -> None:
    sim.write_attr(dev(GPU, "remove"), "1")
    sim.write_attr("/sys/bus/pci/rescan", "1")
    shell_write(sim, dev(GPU, "driver_override"), "none")
    assert wait_for(lambda: sim.kernel.states[GPU].override == "none")


def test_a_write_to_a_new_device_before_its_directory_is_watched_is_applied(
        sim: SimHost) -> None:
    # A script that writes `remove` the moment a rescan shows the device can beat the
    # watch on its new directory (found by the torture suite's uevent storm).
    sim.write_attr(dev(GPU, "remove"), "1")
    watch = sim.kernel.on_change
    assert watch is not None
    written: list[str] = []

    def write_before_the_watch() -> None:
        remove = sim.kernel.tree.real(dev(GPU, "remove"))
        if not written and os.path.exists(remove):
            with open(remove, "w") as f:
                f.write("1")
            written.append(remove)
        watch()

    sim.kernel.on_change = write_before_the_watch
    sim.write_attr("/sys/bus/pci/rescan", "1")
    sim.kernel.on_change = watch
    assert written
    assert wait_for(lambda: not sim.exists(f"/sys/bus/pci/devices/{GPU}"))
