"""The QEMU command line, and how a boot is followed and always ended."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

from . import qemu
from .marker import GUEST_MARKER


def command(tmp_path: Path) -> list[str]:
    return qemu.qemu_command(Path("/k/vmlinux"), Path("/k/initrd.cpio"), tmp_path / "results",
                             tmp_path / "serial.log")


def value(cmd: list[str], option: str) -> str:
    return cmd[cmd.index(option) + 1]


def test_kernel_cmdline_carries_console_iommu_and_marker_and_is_short() -> None:
    words = qemu.kernel_cmdline().split()
    assert {"console=ttyS0", "intel_iommu=on", GUEST_MARKER} <= set(words)
    assert len(qemu.kernel_cmdline()) < 2048


def test_machine_is_tcg_q35_with_split_irqchip_and_intel_iommu(tmp_path: Path) -> None:
    cmd = command(tmp_path)
    assert value(cmd, "-accel") == "tcg,thread=multi"
    assert value(cmd, "-machine") == "q35,kernel-irqchip=split"
    assert (value(cmd, "-cpu"), value(cmd, "-smp"), value(cmd, "-m")) == ("max", "2", "2G")
    assert {"-nodefaults", "-no-reboot"} <= set(cmd)
    assert value(cmd, "-display") == "none"
    assert "intel-iommu,intremap=on,caching-mode=on" in cmd


def test_intel_iommu_is_created_before_any_pci_device(tmp_path: Path) -> None:
    cmd = command(tmp_path)
    devices = [cmd[i + 1] for i, o in enumerate(cmd) if o == "-device"]
    assert devices[0].startswith("intel-iommu")


def test_hosts_root_is_shared_read_only_and_results_read_write(tmp_path: Path) -> None:
    cmd = command(tmp_path)
    fsdevs = [cmd[i + 1] for i, o in enumerate(cmd) if o == "-fsdev"]
    root = next(f for f in fsdevs if "id=fsroot" in f)
    results = next(f for f in fsdevs if "id=fsres" in f)
    assert "path=/," in root and "readonly=on" in root
    assert f"path={tmp_path / 'results'}," in results and "readonly" not in results


def test_commas_in_paths_are_doubled_for_qemu(tmp_path: Path) -> None:
    cmd = qemu.qemu_command(Path("/k/v"), Path("/k/i"), Path("/a,b/results"), Path("/s"))
    assert any("path=/a,,b/results," in o for o in cmd)


def test_boot_streams_the_job_output_and_returns_its_exit_code(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    fake_guest = [sys.executable, "-c",
                  "import pathlib, sys; r = pathlib.Path(sys.argv[1]);"
                  "(r / 'output.log').write_text('3 passed\\n');"
                  "(r / 'stages').write_text('rootfs 1.5\\nudev 2.0\\njob 4.0\\n');"
                  "(r / 'exit_code').write_text('3\\n')", str(results)]
    out = io.StringIO()
    result = qemu.boot(fake_guest, results, tmp_path / "qemu.log", timeout=60, out=out)
    assert result.exit_code == 3
    assert out.getvalue() == "3 passed\n"
    assert result.stages == {"rootfs": 1.5, "udev": 2.0, "job": 4.0}
    assert not result.timed_out


def test_boot_kills_the_guest_at_the_timeout(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    started = time.monotonic()
    result = qemu.boot(["sleep", "60"], results, tmp_path / "qemu.log", timeout=0.5,
                       out=io.StringIO())
    assert result.timed_out
    assert result.qemu_status == -9  # SIGKILL, by its own pid
    assert result.exit_code is None
    assert time.monotonic() - started < 10


def test_guest_that_records_no_exit_code_returns_none(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    result = qemu.boot(["true"], results, tmp_path / "qemu.log", timeout=30, out=io.StringIO())
    assert result.exit_code is None and result.qemu_status == 0 and not result.timed_out
