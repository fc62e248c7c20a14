"""Each documented exit status of vfioctl, produced by a real case against vfiod."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from vfiod.privatebus import PrivateBus

from .helpers import Vfiod, knobs, sim_driver
from .vfioctl_helpers import error_line, vfioctl

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"


def test_success_is_0(vfiod: Vfiod) -> None:
    assert vfioctl(vfiod.address, "status").returncode == 0


def test_a_path_like_device_is_2_before_any_call(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", "../../x")
    assert result.returncode == 2
    assert error_line(result).startswith("vfioctl: '../../x' is not a device")


def test_a_name_vfiod_does_not_know_is_2_from_the_daemon(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", "gpu")
    assert result.returncode == 2
    assert "neither a PCI address" in error_line(result)


def test_an_absent_device_is_3(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", "0000:77:00.0")
    assert result.returncode == 3
    assert error_line(result).startswith("vfioctl: 0000:77:00.0: ")


def test_the_root_disk_controller_is_4_even_forced(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", "00:1f.2", "--force")
    assert result.returncode == 4
    line = error_line(result)
    assert line.startswith("vfioctl: 0000:00:1f.2: ")
    assert line.count("0000:00:1f.2:") == 1
    assert sim_driver(vfiod.sim_root, "0000:00:1f.2") == "ahci"


def test_the_desktop_gpu_held_by_xorg_is_4_naming_the_pid(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", "05:00.0")
    assert result.returncode == 4
    found = re.search(r"Xorg \(pid (\d+)\)", error_line(result))
    assert found and Path(f"/proc/{found.group(1)}/comm").read_text().strip() == "Xorg"


def test_one_function_of_a_shared_group_is_5(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", GPU, "--no-group")
    assert result.returncode == 5
    assert AUDIO in error_line(result)
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_a_bind_stalled_in_the_host_driver_s_unbind_is_6(
        make_vfiod: Callable[..., Vfiod]) -> None:
    # The nvidia driver's remove path hanging (field-notes.md): its unbind write blocks.
    daemon = make_vfiod(**knobs(write_timeout=0.5, delay=[{
        "path": "/sys/bus/pci/drivers/nvidia/unbind", "seconds": 3, "times": 1}])).start()
    result = vfioctl(daemon.address, "bind", GPU)
    assert result.returncode == 6
    line = error_line(result)
    assert line.startswith(f"vfioctl: {GPU}: ") and "did not return within 0.5 s" in line


def test_a_reset_that_kills_the_device_is_7(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(reset_outcome=[["0000:00:1b.0", "flr", "dies"],
                                               ["0000:00:1b.0", "pm", "dies"]])).start()
    result = vfioctl(daemon.address, "reset", "00:1b.0")
    assert result.returncode == 7
    assert "all ones" in error_line(result)


def test_a_write_the_kernel_refuses_is_1(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(fail=[{"path": "/sys/bus/pci/drivers_probe",
                                       "errno": "EIO"}])).start()
    result = vfioctl(daemon.address, "bind", GPU)
    assert result.returncode == 1
    assert "drivers_probe" in error_line(result)
    assert sim_driver(daemon.sim_root, GPU) == "nvidia"


def test_an_unprivileged_user_without_polkit_is_8(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", GPU, user="nobody")
    assert result.returncode == 8, result.stderr
    error_line(result)
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_an_unprivileged_user_may_still_read_status(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "status", "--json", user="nobody")
    assert result.returncode == 0, result.stderr


def test_no_vfiod_on_the_bus_is_9(private_bus: PrivateBus) -> None:
    result = vfioctl(private_bus.address, "status")
    assert result.returncode == 9
    line = error_line(result)
    assert line.startswith(f"vfioctl: cannot reach vfiod on the bus at {private_bus.address}")
    assert line.endswith("(is vfiod running?)")


def test_no_bus_at_all_is_9(tmp_path: Path) -> None:
    result = vfioctl(None, "bind", GPU,
                     env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/none"})
    assert result.returncode == 9
    assert error_line(result) == (f"vfioctl: cannot reach vfiod on the system bus: "
                                  f"unix:path={tmp_path}/none: No such file or directory "
                                  "(is vfiod running?)")


def test_a_job_not_done_within_the_timeout_is_6(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(delay=[{"path": "/sys/bus/pci/drivers/nvidia/unbind",
                                        "seconds": 3, "times": 1}])).start()
    result = vfioctl(daemon.address, "--timeout", "0.5", "bind", GPU)
    assert result.returncode == 6
    assert error_line(result) == (f"vfioctl: {GPU}: bind did not finish within 0.5 s "
                                  "(--timeout); job /org/vfiod1/job/1 goes on in vfiod: "
                                  "follow it with `vfioctl jobs` or `vfioctl monitor`")


def test_a_timeout_too_short_to_connect_is_a_timeout_not_a_missing_vfiod(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "--timeout", "1e-9", "status")
    assert result.returncode == 6
    line = error_line(result)
    assert "timed out" in line and "1e-09 s (--timeout)" in line
    assert "is vfiod running" not in line and "cannot reach" not in line
