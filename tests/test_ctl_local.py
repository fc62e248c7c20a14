"""The commands vfioctl runs without vfiod: doctor, initramfs and libvirt-hook."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vfiod.ctl import exitcodes
from vfiod.ctl.local import ReadOnlyHost
from vfiod.ctl.main import main
from vfiod.errors import HostWriteError, ModuleLoadError

GPU_CONFIG = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\nboot = "vfio"\n'


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config giving the guest's GPU to vfio-pci at boot, named by VFIOD_CONFIG."""
    path = tmp_path / "vfiod.toml"
    path.write_text(GPU_CONFIG)
    monkeypatch.setenv("VFIOD_CONFIG", str(path))
    return path


def test_read_only_host_refuses_writes_and_leaves_the_file_alone(tmp_path: Path) -> None:
    control = tmp_path / "sys/bus/pci/drivers_probe"
    control.parent.mkdir(parents=True)
    control.write_text("")
    host = ReadOnlyHost(tmp_path)
    with pytest.raises(HostWriteError) as info:
        host.write_attr("/sys/bus/pci/drivers_probe", "0000:06:00.0")
    assert info.value.errno == errno.EROFS
    assert control.read_text() == ""


def test_read_only_host_loads_no_module(tmp_path: Path) -> None:
    with pytest.raises(ModuleLoadError):
        ReadOnlyHost(tmp_path).load_module("vfio-pci")


def test_doctor_on_a_good_simulated_host_exits_0(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VFIOD_CONFIG", str(tmp_path / "absent.toml"))
    assert main(["doctor", "--simulate", "seed-x99"]) == exitcodes.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["ok", "iommu"]
    assert lines[-1].endswith(", 0 failed")


def test_doctor_with_the_iommu_off_fails_and_says_how_to_fix_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VFIOD_CONFIG", str(tmp_path / "absent.toml"))
    assert main(["doctor", "--simulate", "seed-x99-noiommu"]) == exitcodes.FAILED
    lines = capsys.readouterr().out.splitlines()
    iommu = next(i for i, line in enumerate(lines) if line.split()[:2] == ["FAIL", "iommu"])
    assert lines[iommu + 1].strip().startswith("fix: ")


def test_doctor_json_lists_every_check(config: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--simulate", "seed-x99", "--json"]) == exitcodes.FAILED
    checks = json.loads(capsys.readouterr().out)
    assert all(set(c) == {"id", "status", "summary", "fix"} for c in checks)
    by_id = {c["id"]: c for c in checks}
    assert by_id["device:gpu"]["status"] == "ok"
    assert by_id["shim"]["status"] == "fail" and by_id["shim"]["fix"]


def test_doctor_of_an_unknown_profile_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--simulate", "pdp-11"]) == exitcodes.USAGE
    assert capsys.readouterr().err.startswith("vfioctl: --simulate pdp-11: no such profile")


def test_a_bad_config_is_one_line_with_file_and_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[device]]\nmatch = "0000:06:00.0"\nboot = "sometimes"\n')
    monkeypatch.setenv("VFIOD_CONFIG", str(bad))
    assert main(["doctor", "--simulate", "seed-x99"]) == exitcodes.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"vfioctl: {bad}:3: ") and err.count("\n") == 1


def test_doctor_reads_this_machine_without_a_traceback() -> None:
    # Read-only: ReadOnlyHost cannot write /sys or load a module.
    result = subprocess.run([sys.executable, "-m", "vfiod.ctl", "doctor", "--json"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "VFIOD_CONFIG": "/nonexistent/vfiod.toml"})
    assert result.returncode in (exitcodes.OK, exitcodes.FAILED), result.stderr
    assert result.stderr == ""
    assert {c["id"] for c in json.loads(result.stdout)} >= {"iommu", "cmdline"}


def test_initramfs_render_claims_the_gpu_and_its_group(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["initramfs", "render", "--simulate", "seed-x99"]) == exitcodes.OK
    shim = capsys.readouterr().out
    assert shim.startswith("#!/bin/sh")
    assert 'LISTED=" 0000:06:00.0 0000:06:00.1 "' in shim


def test_initramfs_install_writes_the_shim_under_destdir(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "dest"
    assert main(["initramfs", "install", "--simulate", "seed-x99", "--destdir", str(root),
                 "--tool", "dracut"]) == exitcodes.OK
    out = capsys.readouterr().out
    assert "claims 0000:06:00.1 (10de:10ef) at boot" in out
    assert (root / "var/lib/vfiod/early-boot.sh").is_file()
    assert out.splitlines()[-1].startswith("next: dracut")


def test_libvirt_hook_install_writes_an_executable_hook_for_the_system_python(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sys.executable != "/usr/bin/python3"  # vfioctl runs from the project's venv
    assert main(["libvirt-hook", "install", "--destdir", str(tmp_path)]) == exitcodes.OK
    hook = tmp_path / "etc/libvirt/hooks/qemu.d/vfiod"
    assert hook.read_text().startswith("#!/usr/bin/python3 -I\n")
    assert os.access(hook, os.X_OK)
    assert f"wrote {hook}" in capsys.readouterr().out


def test_libvirt_hook_install_takes_another_interpreter_when_told(tmp_path: Path) -> None:
    assert main(["libvirt-hook", "install", "--destdir", str(tmp_path),
                 "--python", "/usr/local/bin/python3"]) == exitcodes.OK
    hook = tmp_path / "etc/libvirt/hooks/qemu.d/vfiod"
    assert hook.read_text().startswith("#!/usr/local/bin/python3 -I\n")


def test_libvirt_hook_render_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["libvirt-hook", "render"]) == exitcodes.OK
    assert "never virsh" in capsys.readouterr().out


def test_initramfs_render_of_a_shim_claiming_the_root_disk_warns_at_the_top_and_on_stderr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "vfiod.toml"
    path.write_text('[[device]]\nmatch = "00:1f.3"\nboot = "vfio"\n')  # group 12: the root SATA
    monkeypatch.setenv("VFIOD_CONFIG", str(path))
    assert main(["initramfs", "render", "--simulate", "seed-x99"]) == exitcodes.OK
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("#!/bin/sh")
    assert lines[1].startswith("# WARNING: vfioctl initramfs install refuses this shim: it "
                               "claims 0000:00:1f.2 at boot: ")
    assert "mounted on /" in lines[1]
    assert captured.err.startswith("vfioctl: warning: vfioctl initramfs install refuses "
                                   "this shim: it claims 0000:00:1f.2 at boot")


def test_initramfs_render_of_a_harmless_shim_has_no_warning(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["initramfs", "render", "--simulate", "seed-x99"]) == exitcodes.OK
    captured = capsys.readouterr()
    assert "WARNING" not in captured.out and captured.err == ""
