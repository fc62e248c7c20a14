"""``vfioctl status`` against the real daemon: the table and --json agree with Status."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Callable

import pytest

from vfiod.records import DeviceStatus

from .helpers import Vfiod
from .vfioctl_helpers import error_line, table_rows, vfioctl, vfioctl_argv

GPU = "0000:06:00.0"
DEVICE_PROPERTIES = {
    "Address": "address", "VendorId": "vendor_id", "DeviceId": "device_id", "Name": "name",
    "Class": "class_code", "Driver": "driver", "HostDriver": "host_driver",
    "State": "state", "IommuGroup": "iommu_group", "Holder": "holder",
    "HolderPid": "holder_pid", "ResetMethods": "reset_methods", "Healthy": "healthy",
    "BootVga": "boot_vga",
}


def test_status_table_lists_every_function_with_its_driver_and_state(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "status")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    status = vfiod.status()
    assert set(rows) == set(status)
    for address, row in status.items():
        cells = rows[address]
        assert (row["driver"] or "-") in cells, (address, cells)
        assert row["state"] in cells, (address, cells)


def test_status_table_has_a_header_per_iommu_group(vfiod: Vfiod) -> None:
    out = vfioctl(vfiod.address, "status").stdout
    groups = {row["group"] for row in vfiod.status().values() if row["group"] >= 0}
    headers = [line for line in out.splitlines() if line.startswith("IOMMU group ")]
    assert {int(h.split()[2].rstrip(":")) for h in headers} == groups
    lines = out.splitlines()
    below31 = lines[lines.index("IOMMU group 31") + 1:]
    members = []
    for line in below31:
        if not line.startswith("  "):
            break
        members.append(line.split()[0])
    assert {GPU, "0000:06:00.1"} <= set(members)


def test_status_marks_bridges_the_boot_gpu_and_its_xorg_holder(vfiod: Vfiod) -> None:
    rows = table_rows(vfioctl(vfiod.address, "status").stdout)
    boot_gpu = rows["0000:05:00.0"]
    assert "boot VGA" in boot_gpu[-1]
    assert any(cell.startswith("Xorg (pid ") for cell in boot_gpu), boot_gpu
    bridges = [a for a, cells in rows.items() if "bridge" in cells[-1]]
    assert "0000:00:00.0" in bridges  # the host bridge, on no driver
    assert all(rows[a][2] == "pcieport" for a in bridges if a != "0000:00:00.0")
    assert GPU not in bridges


def test_status_json_agrees_with_manager_status(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "status", "--json")
    assert result.returncode == 0, result.stderr
    objects = {o["address"]: o for o in json.loads(result.stdout)}
    status = vfiod.status()
    assert set(objects) == set(status)
    for address, row in status.items():
        o = objects[address]
        assert (f"{o['vendor_id']:04x}:{o['device_id']:04x}", o["name"], o["driver"],
                o["state"], o["iommu_group"], o["holder"]) == \
            (row["ids"], row["name"], row["driver"], row["state"], row["group"],
             row["holder"]), address


def test_status_json_objects_are_devicestatus_records(vfiod: Vfiod) -> None:
    objects = json.loads(vfioctl(vfiod.address, "status", "--json").stdout)
    for obj in objects:
        assert list(obj) == list(DeviceStatus.model_fields)
        DeviceStatus.model_validate(obj)


def test_status_of_one_device_shows_every_property_of_its_object(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "status", "06:00.0", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    for prop, field in DEVICE_PROPERTIES.items():
        assert shown[field] == vfiod.get_property(GPU, prop), prop


def test_status_of_one_device_in_detail_names_its_group_peers(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "status", "06:00.0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{GPU}  NVIDIA Corporation")
    detail = {line[2:].split("  ")[0].strip(): line.rsplit("  ", 1)[-1]
              for line in lines[1:]}
    assert detail["driver"] == "nvidia" and detail["state"] == "host"
    assert detail["IOMMU group"] == "31"
    assert "0000:06:00.1 (snd_hda_intel)" in detail["group peers"]


def test_status_of_an_absent_device_is_exit_3(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "status", "77:00.0")
    assert result.returncode == 3
    assert error_line(result) == "vfioctl: 0000:77:00.0: no such PCI device"


def test_status_by_config_name_shows_that_device(
        make_vfiod: Callable[..., Vfiod]) -> None:
    config = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\n'
    daemon = make_vfiod(config=config).start()
    assert daemon.config is not None
    result = vfioctl(daemon.address, "status", "gpu", "--json",
                     env={"VFIOD_CONFIG": str(daemon.config)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["address"] == GPU


def test_status_of_a_name_no_config_has_is_exit_2(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "status", "gpu",
                     env={"VFIOD_CONFIG": "/nonexistent/vfiod.toml"})
    assert result.returncode == 2
    assert error_line(result).startswith("vfioctl: 'gpu' is neither a PCI address")


def vfioctl_on_a_terminal(address: str, columns: int, *args: str) -> str:
    """vfioctl's stdout on a pseudo-terminal *columns* wide (no COLUMNS in its
    environment: the width comes from the terminal, as for a user)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "VFIOCTL_DEBUG")}
    try:
        proc = subprocess.Popen(vfioctl_argv(address, *args), stdin=subprocess.DEVNULL,
                                stdout=slave, stderr=subprocess.PIPE, env=env)
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_status_on_a_terminal_fits_its_width(vfiod: Vfiod, columns: int) -> None:
    out = vfioctl_on_a_terminal(vfiod.address, columns, "status")
    assert "IOMMU group 31" in out
    too_wide = [line for line in out.splitlines() if len(line) > columns]
    assert too_wide == []
    assert "…" in out


def test_status_full_on_a_terminal_shows_every_text_whole(vfiod: Vfiod) -> None:
    out = vfioctl_on_a_terminal(vfiod.address, 80, "status", "--full")
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) > 80
    names = {row["name"] for row in vfiod.status().values() if row["name"]}
    assert names and all(name in out for name in names)


def test_status_into_a_pipe_shows_every_text_whole(vfiod: Vfiod) -> None:
    out = vfioctl(vfiod.address, "status").stdout
    assert "…" not in out
    names = {row["name"] for row in vfiod.status().values() if row["name"]}
    assert names and all(name in out for name in names)
