"""How vfioctl shows devices: the status table, the detail view, JSON, moves, monitor."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from ctl_samples import gpu, hdmi_audio, root_port, seed_devices

from vfiod.ctl import output
from vfiod.ctl.devices import JSON_FIELDS, DeviceProperties
from vfiod.records import DeviceStatus


def body_lines(table: str) -> list[str]:
    """The table's lines without the column header."""
    return table.splitlines()[1:]


def test_table_puts_devices_under_a_header_per_iommu_group() -> None:
    lines = body_lines(output.status_table(seed_devices()))
    headers = [line for line in lines if not line.startswith(" ")]
    assert headers == ["IOMMU group 12", "IOMMU group 30", "IOMMU group 31",
                       "no IOMMU group (cannot be passed through)"]
    group31 = lines[lines.index("IOMMU group 31") + 1:][:3]
    assert [line.split()[0] for line in group31] == ["0000:00:03.0", "0000:06:00.0",
                                                     "0000:06:00.1"]


def test_table_columns_line_up() -> None:
    rows = [line for line in output.status_table(seed_devices()).splitlines()
            if line.startswith("  ")]
    header = rows[0]
    for row in rows[1:]:
        for column in ("NAME", "DRIVER", "STATE", "HOLDER"):
            start = header.index(column)
            # Every cell starts where its header does, after a gap of two blanks.
            assert row[start - 2:start] == "  " and row[start] != " ", (column, row)


def test_table_shows_driver_state_and_holder() -> None:
    rows = {line.split()[0]: line.split("  ") for line in
            output.status_table(seed_devices()).splitlines() if line.startswith("  0")}
    boot_gpu = [cell.strip() for cell in rows["0000:05:00.0"] if cell.strip()]
    assert boot_gpu[2:5] == ["nvidia", "host", "Xorg (pid 812)"]
    unbound = [cell.strip() for cell in rows["0000:ff:0b.0"] if cell.strip()]
    assert unbound[2:5] == ["-", "unbound", "-"]


def test_bridges_and_the_boot_vga_are_marked() -> None:
    table = output.status_table(seed_devices())
    line_of = {line.split()[0]: line for line in table.splitlines() if line.startswith("  0")}
    assert "bridge" in line_of["0000:00:03.0"]
    assert "boot VGA" in line_of["0000:05:00.0"]
    assert "bridge" not in line_of["0000:06:00.0"]
    assert "boot VGA" not in line_of["0000:06:00.0"]


def test_what_the_host_uses_a_device_for_is_shown_when_vfiod_says() -> None:
    disk = DeviceProperties("0000:00:1f.2", name="SATA", driver="ahci", state="host",
                      iommu_group=12, used_by="/dev/sda2 is mounted on / (ext4)")
    assert output.status_table([disk]).splitlines()[-1].endswith(
        "host: /dev/sda2 is mounted on / (ext4)")


def test_a_group_wholly_on_vfio_pci_is_ready_for_a_guest() -> None:
    devs = [root_port(), gpu(driver="vfio-pci"), hdmi_audio(driver="vfio-pci")]
    assert "IOMMU group 31: ready for a guest" in output.status_table(devs)


def test_a_group_held_by_a_guest_says_so() -> None:
    devs = [gpu(driver="vfio-pci", state="guest", holder="qemu-system-x86 (pid 4242)"),
            hdmi_audio(driver="vfio-pci")]
    assert "IOMMU group 31: in a guest" in output.status_table(devs)


def test_a_partly_bound_group_is_flagged_as_unusable() -> None:
    devs = [gpu(driver="vfio-pci"), hdmi_audio()]
    assert "IOMMU group 31: partly on vfio-pci (1 of 2 endpoints), not usable by a guest" \
        in output.status_table(devs)


def test_unhealthy_and_error_devices_carry_a_note() -> None:
    dead = gpu(healthy=False, state="error", error="config space reads all ones")
    line = output.status_table([dead]).splitlines()[-1]
    assert "unhealthy" in line and "config space reads all ones" in line


def test_names_are_shortened_to_fit_the_terminal() -> None:
    wide = output.status_table(seed_devices())
    narrow = output.status_table(seed_devices(), width=100)
    assert max(len(line.split("  ")[0]) for line in narrow.splitlines()) < 100
    assert "…" in narrow and "…" not in wide
    longest = max(len(line) for line in wide.splitlines())
    assert max(len(line) for line in narrow.splitlines()) < longest


def _wide_devices() -> list[DeviceProperties]:
    """The seed devices plus the long texts a real host produces: a guest's holder, a
    disk controller with several mounts, a device in error."""
    disk = DeviceProperties("0000:00:1f.2", name="Intel Corporation C610/X99 series chipset "
                      "6-Port SATA Controller [AHCI mode]", driver="ahci", state="host",
                      iommu_group=12, used_by="/dev/sda2 is mounted on / (ext4), /dev/sda3 "
                      "is mounted on /home (ext4), /dev/sda4 is active swap")
    held = gpu(driver="vfio-pci", state="guest",
               holder="qemu-system-x86_64 -name win10-gaming-vm (pid 424242)")
    dead = dataclasses.replace(hdmi_audio(driver="vfio-pci"), healthy=False, state="error",
                               error="config space reads all ones after the bus reset")
    others = [d for d in seed_devices() if d.address not in
              {disk.address, held.address, dead.address}]
    return [disk, held, dead, *others]


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_no_line_is_wider_than_the_terminal(columns: int) -> None:
    table = output.status_table(_wide_devices(), width=columns)
    assert max(len(line) for line in table.splitlines()) <= columns
    assert "…" in table


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_a_fitted_table_keeps_address_driver_and_state_whole(columns: int) -> None:
    rows = {line.split()[0]: line for line in
            output.status_table(_wide_devices(), width=columns).splitlines()
            if line.startswith("  0")}
    assert "  vfio-pci  " in rows["0000:06:00.0"] and "  guest  " in rows["0000:06:00.0"]
    assert "  snd_hda_intel  " in rows["0000:05:00.1"]


def test_a_fitted_table_still_lines_up() -> None:
    lines = output.status_table(_wide_devices(), width=100).splitlines()
    header = lines[0]
    for row in (line for line in lines[1:] if line.startswith("  0")):
        for column in ("NAME", "DRIVER", "STATE", "HOLDER", "NOTES"):
            start = header.index(column)
            if start < len(row):  # a row without notes ends at its holder
                assert row[start - 2:start] == "  " and row[start] != " ", (column, row)


def test_without_a_width_every_text_is_whole() -> None:
    table = output.status_table(_wide_devices())
    assert "…" not in table
    assert "/dev/sda4 is active swap" in table
    assert "qemu-system-x86_64 -name win10-gaming-vm (pid 424242)" in table
    assert max(len(line) for line in table.splitlines()) > 120


def test_a_very_narrow_terminal_cuts_each_line_at_its_width() -> None:
    table = output.status_table(_wide_devices(), width=40)
    assert max(len(line) for line in table.splitlines()) <= 40


def test_fit_ellipsizes_only_what_is_too_long() -> None:
    assert output.fit("short", 80) == "short"
    assert output.fit("x" * 90, 80) == "x" * 79 + "…"
    assert output.fit("x" * 90, None) == "x" * 90


def test_no_devices_says_so() -> None:
    assert output.status_table([]) == "vfiod reports no PCI devices\n"


def test_summary_counts_vfio_guest_and_unbound() -> None:
    devs = [gpu(driver="vfio-pci", state="guest", holder="qemu (pid 1)"),
            hdmi_audio(driver="vfio-pci"), DeviceProperties("0000:00:11.0")]
    assert output.summary_line(devs) == \
        "3 devices: 2 on vfio-pci (1 in a guest), 1 without a driver"


def test_detail_shows_every_property_and_the_group_peers() -> None:
    dev = gpu(driver="vfio-pci", holder="qemu-system-x86 (pid 4242)", holder_pid=4242)
    text = output.device_detail(dev, [root_port(), dev, hdmi_audio()])
    lines = text.splitlines()
    assert lines[0] == "0000:06:00.0  NVIDIA Corporation GP102 [GeForce GTX 1080 Ti]"
    shown = {line[2:].split("  ")[0].strip(): line.split("  ")[-1].strip()
             for line in lines[1:]}
    assert shown["ids"] == "10de:1b06"
    assert shown["class"] == "0x030000"
    assert shown["driver"] == "vfio-pci"
    assert shown["host driver"] == "nvidia"
    assert shown["IOMMU group"] == "31"
    assert shown["holder"] == "qemu-system-x86 (pid 4242)"
    assert shown["holder pid"] == "4242"
    assert shown["reset methods"] == "bus"
    assert (shown["healthy"], shown["boot VGA"], shown["bridge"]) == ("yes", "no", "no")
    assert shown["error"] == "-"
    assert shown["group peers"] == "0000:00:03.0 (pcieport), 0000:06:00.1 (snd_hda_intel)"


def test_detail_shows_properties_it_does_not_know_too_with_readable_labels() -> None:
    dev = gpu()
    dev.extra["ConfigName"] = "gpu"
    dev.extra["IommuEnabled"] = True
    detail = output.device_detail(dev)
    assert re.search(r"^ +config name +gpu$", detail, re.M), detail
    assert re.search(r"^ +iommu enabled +yes$", detail, re.M), detail
    assert "ConfigName" not in detail


def test_json_objects_have_exactly_the_devicestatus_fields_in_order() -> None:
    assert list(JSON_FIELDS) == list(DeviceStatus.model_fields)
    objs = json.loads(output.status_json(seed_devices()))
    assert all(list(o) == list(DeviceStatus.model_fields) for o in objs)


def test_json_objects_validate_as_devicestatus_records() -> None:
    for obj in json.loads(output.status_json(seed_devices())):
        record = DeviceStatus.model_validate(obj)
        assert record.address == obj["address"]


def test_json_list_is_sorted_by_address() -> None:
    addresses = [o["address"] for o in json.loads(output.status_json(seed_devices()))]
    assert addresses == sorted(addresses)


def test_moved_lines_show_each_function_going_from_its_driver_to_the_new_one() -> None:
    before = {d.address: d for d in (gpu(), hdmi_audio())}
    after = {d.address: d for d in (gpu(driver="vfio-pci"), hdmi_audio(driver="vfio-pci"))}
    lines = output.moved_lines(["0000:06:00.0", "0000:06:00.1"], before, after)
    assert lines == [
        "0000:06:00.0  NVIDIA Corporation GP102 [GeForce GTX 1080 Ti]  nvidia -> vfio-pci",
        "0000:06:00.1  NVIDIA Corporation GP102 HDMI Audio Controller  snd_hda_intel -> "
        "vfio-pci",
    ]


def test_moved_lines_fit_the_terminal_with_the_moves_whole() -> None:
    before = {d.address: d for d in (gpu(), hdmi_audio())}
    after = {d.address: d for d in (gpu(driver="vfio-pci"), hdmi_audio(driver="vfio-pci"))}
    lines = output.moved_lines(["0000:06:00.0", "0000:06:00.1"], before, after, width=80)
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].endswith("…  nvidia -> vfio-pci")
    assert lines[1].endswith("…  snd_hda_intel -> vfio-pci")


def test_moved_lines_name_a_missing_driver() -> None:
    before = {"0000:00:11.0": DeviceProperties("0000:00:11.0", name="SPSR")}
    after = {"0000:00:11.0": DeviceProperties("0000:00:11.0", name="SPSR", driver="vfio-pci")}
    assert output.moved_lines(["0000:00:11.0"], before, after) == \
        ["0000:00:11.0  SPSR  no driver -> vfio-pci"]


def test_monitor_line_lists_each_change() -> None:
    line = output.monitor_line("12:00:01", "0000:06:00.0", "GP102",
                               [("driver", "nvidia", "vfio-pci"), ("state", "host", "vfio")])
    assert line == "12:00:01  0000:06:00.0  GP102  driver nvidia -> vfio-pci, " \
                   "state host -> vfio"


def test_detail_shows_the_health_record_with_the_newest_guest_run_first() -> None:
    dev = dataclasses.replace(
        gpu(), reset_count=4, last_reset_method="bus", last_reset_outcome="healthy",
        last_reset_time=1_764_914_462_000_000, last_reset_rungs=2,
        guest_runs=[(1_764_910_000_000_000, 1_764_913_600_000_000, "killed"),
                    (1_764_914_000_000_000, 0, "running")])
    lines = output.device_detail(dev).splitlines()
    shown = {line.split("  ", 2)[1].strip(): line.rsplit("  ", 1)[-1] for line in lines[1:]
             if line.split("  ", 2)[1].strip()}
    assert shown["resets"] == "4"
    assert shown["last reset"] == "2025-12-05 06:01:02 UTC: bus, healthy, 2 rung(s)"
    assert shown["failed in a row"] == "0"
    assert shown["quarantined"] == "no"
    assert shown["guest runs"] == "2"
    runs = [line.strip() for line in lines if " - " in line]
    assert runs == ["2025-12-05 05:53:20 UTC - now: running",
                    "2025-12-05 04:46:40 UTC - 2025-12-05 05:46:40 UTC: killed"]


def test_a_quarantined_device_says_so_in_the_table_notes() -> None:
    dev = dataclasses.replace(gpu(), quarantined=True, quarantine_reason="why")
    assert "quarantined (vfioctl reset --clear)" in output.notes_of(dev)
def test_a_device_the_desktop_is_releasing_says_so_in_its_notes() -> None:
    dev = gpu()
    dev.update({"Releasing": True, "State": "busy"})
    assert "being released by the desktop" in output.notes_of(dev)
    assert "being released" not in output.notes_of(gpu())


def test_times_read_alike_in_vfioctl_and_in_the_daemons_quarantine_reason() -> None:
    from vfiod import device_records

    assert output.utc_time(1_796_450_462_000_000) == "2026-12-05 06:01:02 UTC"
    assert device_records.utc_time is output.utc_time
