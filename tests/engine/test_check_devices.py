"""CheckDevices on seed-x99: the guest's list from the write-up is ready; each problem of
a changed list is named with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfiod.config import parse_config
from vfiod.engine import Engine
from vfiod.engine.checks import DeviceCheck
from vfiod.device_records import ResetResult
from vfiod.errors import ResetFailed
from vfiod.sim import SimHost

#: The write-up's guest: USB 3.1, onboard audio, GPU + HDMI audio, the sSATA group.
SEED_GUEST = ["0000:11:00.0", "0000:00:1b.0", "0000:06:00.0", "0000:06:00.1",
              "0000:00:11.0", "0000:00:11.4"]


def errors(checks: list[DeviceCheck]) -> list[DeviceCheck]:
    return [c for c in checks if c.severity == "error"]


def test_the_write_ups_guest_is_ready(engine: Engine) -> None:
    checks = engine.check_devices(SEED_GUEST)
    assert [(c.device, c.severity) for c in checks] == [(a, "ok") for a in SEED_GUEST]


def test_a_gpu_without_its_hdmi_audio_names_the_missing_group_mate(engine: Engine) -> None:
    found = errors(engine.check_devices(["0000:06:00.0"]))
    assert len(found) == 1
    assert "0000:06:00.1" in found[0].message
    assert "fix: add a <hostdev> for 0000:06:00.1" in found[0].message


def test_a_group_mate_on_vfio_pci_already_is_not_missing(engine: Engine) -> None:
    engine.bind("0000:00:11.4")
    assert not errors(engine.check_devices(["0000:00:11.4"]))


def test_the_root_disks_controller_is_refused_as_needed_by_the_host(engine: Engine) -> None:
    found = errors(engine.check_devices(["0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"]))
    assert found and all("the host needs it" in c.message for c in found)
    assert any("mounted on /" in c.message and "fix:" in c.message for c in found)


def test_the_desktops_gpu_is_refused_naming_the_desktop(engine: Engine) -> None:
    found = errors(engine.check_devices(["0000:05:00.0", "0000:05:00.1"]))
    assert any(c.device == "0000:05:00.0" and "Xorg" in c.message
               and "vfioctl bind --force 0000:05:00.0" in c.message for c in found)
    assert not any(c.severity == "ok" for c in engine.check_devices(["0000:05:00.1"]))


def test_a_device_whose_ids_changed_is_refused_with_what_changed(
        host: SimHost, tmp_path: Path) -> None:
    config = parse_config('[[device]]\nmatch = "1002:67df@0000:06:00.0"\nname = "gpu"\n')
    engine = Engine(host, tmp_path / "state", config)
    found = errors(engine.check_devices(["0000:06:00.0", "0000:06:00.1"]))
    assert len(found) == 1
    assert "'1002:67df@0000:06:00.0'" in found[0].message
    assert "10de:1b06" in found[0].message and "fix:" in found[0].message


def test_a_config_name_whose_device_changed_says_what_is_there_now(
        host: SimHost, tmp_path: Path) -> None:
    config = parse_config('[[device]]\nmatch = "1002:67df@0000:06:00.0"\nname = "gpu"\n')
    engine = Engine(host, tmp_path / "state", config)
    [check] = engine.check_devices(["gpu"])
    assert check.severity == "error" and "10de:1b06" in check.message


def test_a_device_that_is_not_there_is_refused(engine: Engine) -> None:
    [check] = engine.check_devices(["0000:0a:00.0"])
    assert (check.device, check.severity) == ("0000:0a:00.0", "error")
    assert "no such PCI device" in check.message and "fix:" in check.message


def test_a_device_held_by_another_guest_is_refused(engine: Engine, host: SimHost) -> None:
    engine.bind("0000:06:00.0")
    guest = host.spawn_holder(["/dev/vfio/31"])
    try:
        engine.holders_changed()
        found = errors(engine.check_devices(["0000:06:00.0", "0000:06:00.1"]))
        assert any(f"pid {guest.pid}" in c.message for c in found)
    finally:
        guest.close()


def test_checking_writes_nothing(engine: Engine, host: SimHost) -> None:
    before = list(host.write_log)
    engine.check_devices(SEED_GUEST + ["0000:05:00.0", "0000:00:1f.2"])
    assert host.write_log == before


def test_a_quarantined_device_is_refused_with_its_history_and_how_to_lift_it(
        host: SimHost, tmp_path: Path) -> None:
    usb = "0000:11:00.0"  # the guest's USB controller, alone in its group
    engine = Engine(host, tmp_path / "state", parse_config("[daemon]\nquarantine_after = 1\n"))
    engine.bind(usb)
    for method in engine.device_status(usb).reset_methods:
        host.kernel.set_reset_outcome(usb, method, "dies")
    host.faults.fail(f"*/{usb}/remove", 5)  # EIO: the ladder's last rung cannot run
    with pytest.raises(ResetFailed):
        engine.reset(usb)
    found = next(c for c in errors(engine.check_devices([usb])) if "quarantined" in c.message)
    assert found.device == usb
    rows = [c for c in engine.check_devices([usb]) if "quarantined" in c.message]
    assert rows == [found]  # one row, not the plan's refusal again
    assert found.message.startswith(f"{usb} is quarantined: its last 1 reset(s) failed")
    assert f"vfioctl reset --clear {usb}" in found.message


def test_a_quarantined_group_mate_outside_the_list_is_named(engine: Engine) -> None:
    gpu, audio = "0000:06:00.0", "0000:06:00.1"
    engine.bind(gpu)  # the audio function on vfio-pci too: not a missing group mate
    engine.records.record_reset(audio, engine.device_status(audio).ids, ResetResult(
        method="", rungs=0, healthy=False, problem="bus: it never came back"), 1)
    rows = [c for c in engine.check_devices([gpu]) if "quarantined" in c.message]
    assert [(c.device, c.severity) for c in rows] == [(gpu, "error")]
    assert f"{audio} is quarantined" in rows[0].message


def test_an_unhealthy_device_that_does_not_read_all_ones_says_what_is_wrong(
        engine: Engine) -> None:
    usb = "0000:11:00.0"
    engine.inventory.mark_unhealthy(usb, "its link did not come back")
    [check] = engine.check_devices([usb])
    assert (check.device, check.severity) == (usb, "error")
    assert "unhealthy after its last reset: its link did not come back" in check.message
    assert "reads all ones" not in check.message
