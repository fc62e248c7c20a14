"""The guest-side code refuses to run on a host (this machine is no test guest)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .marker import GUEST_MARKER, in_test_guest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytestmark = pytest.mark.skipif(in_test_guest(), reason="these check a host, not the guest")


def test_marker_is_absent_from_a_cmdline_without_it(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 vfiod.testguest=10 intel_iommu=on\n")
    assert not in_test_guest(str(cmdline))


def test_marker_is_found_as_a_whole_word(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"console=ttyS0 {GUEST_MARKER} panic=-1\n")
    assert in_test_guest(str(cmdline))


def test_guest_suite_refuses_to_run_here() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/vm/guest", "-p", "no:cacheprovider", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4
    assert "runs only inside the QEMU test guest" in proc.stdout + proc.stderr
    assert "passed" not in proc.stdout


@pytest.mark.parametrize("module", ["pci", "vfio_api", "udev", "passthrough"])
def test_guest_helper_module_refuses_to_import_here(module: str) -> None:
    with pytest.raises(RuntimeError, match="only in the test guest"):
        importlib.import_module(f"{__package__}.guest.{module}")


def test_vfio_holder_refuses_to_run_here() -> None:
    holder = importlib.import_module(f"{__package__}.guest.vfio_holder")
    assert holder.main(["1"]) == 2
    with pytest.raises(RuntimeError, match="only in the test guest"):
        holder.Holder(1)


def test_init_checks_the_marker_before_anything_but_reading_proc_in_each_stage() -> None:
    script = (HERE / "init.sh").read_text()
    for stage in ("stage1", "stage2"):
        body = script[script.index(f"{stage}() {{"):]
        body = body[:body.index("\n}\n")]
        lines = [line.strip() for line in body.splitlines()[1:]]
        check = lines.index("check_marker")
        acting = [line for line in lines[:check]
                  if re.match(r"(mount|insmod|modprobe|run|echo|chroot|switch_root)\b", line)
                  and not line.startswith("mount -t proc proc /proc")]
        assert acting == [], f"{stage} acts before check_marker: {acting}"
