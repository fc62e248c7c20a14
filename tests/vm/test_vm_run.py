"""python -m tests.vm.run: arguments, the job it writes, and when it does not run."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from . import run
from .kernel import Kernel

REPO = Path(__file__).resolve().parents[2]


def run_tier_without_qemu(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The real entry point, with a PATH where no QEMU can be found."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VFIOD_VM")}
    environ.update(PATH=str(tmp_path), VFIOD_VM_CACHE=str(tmp_path / "cache"), **env)
    return subprocess.run([sys.executable, "-m", "tests.vm.run"], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_without_qemu_it_says_so_in_one_line_and_fails(tmp_path: Path) -> None:
    proc = run_tier_without_qemu(tmp_path)
    assert proc.returncode == run.EXIT_NOT_RUN
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    assert "NOT run" in lines[0] and "qemu-system-x86_64" in lines[0]


def test_without_qemu_it_exits_0_when_the_tier_is_optional(tmp_path: Path) -> None:
    proc = run_tier_without_qemu(tmp_path, VFIOD_VM_OPTIONAL="1")
    assert proc.returncode == 0
    assert "NOT run" in proc.stdout
    assert not (tmp_path / "cache" / "runs").exists()


def test_unknown_arguments_go_to_pytest() -> None:
    opts, rest = run.parse_args(["--keep", "-k", "nic", "-x"])
    assert opts.keep and opts.shell_cmd is None
    assert rest == ["-k", "nic", "-x"]


def test_arguments_after_double_dash_all_go_to_pytest() -> None:
    opts, rest = run.parse_args(["--", "--keep"])
    assert not opts.keep
    assert rest == ["--keep"]


def test_default_guest_command_runs_the_guest_suite_with_this_python() -> None:
    argv = shlex.split(run.guest_command(None, ["-k", "nic and reset"]))
    assert argv[:3] == [sys.executable, "-m", "pytest"]
    assert "tests/vm/guest" in argv
    assert argv[argv.index("-p") + 1] == "no:cacheprovider"
    assert argv[-2:] == ["-k", "nic and reset"]


def test_warmup_collects_the_same_suite_without_running_it() -> None:
    warmup = shlex.split(run.warmup_command(None, ["-k", "nic"]))
    assert warmup == shlex.split(run.guest_command(None, ["-k", "nic", "--collect-only"]))


def test_no_warmup_for_a_shell_command() -> None:
    assert run.warmup_command("true", []) == ""


def test_shell_cmd_replaces_pytest() -> None:
    assert run.guest_command("ls /dev/vfio", ["-x"]) == "ls /dev/vfio"


def test_job_names_the_kernel_modules_the_repo_and_the_command(tmp_path: Path) -> None:
    kernel = Kernel("6.1.0-57-amd64", tmp_path / "kernel dir")
    run.write_job(tmp_path / "results", kernel, "echo hello")
    env = (tmp_path / "results" / "job.env").read_text()
    assert f"KERNEL_MODULES={shlex.quote(str(kernel.modules))}" in env
    assert f"WORKDIR={shlex.quote(str(REPO))}" in env
    assert (tmp_path / "results" / "job.sh").read_text().splitlines()[-1] == "echo hello"


@pytest.mark.parametrize("given, expected", [({"VFIOD_VM_CACHE": "/c/vm"}, "/c/vm"),
                                             ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/vfiod-vm")])
def test_cache_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch,
                                           given: dict[str, str], expected: str) -> None:
    monkeypatch.delenv("VFIOD_VM_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for key, val in given.items():
        monkeypatch.setenv(key, val)
    from .cache import cache_dir
    assert str(cache_dir()) == expected


def test_only_the_newest_run_folders_are_kept(tmp_path: Path) -> None:
    for i in range(4):
        folder = tmp_path / f"run-{i}"
        folder.mkdir()
        os.utime(folder, (1000 + i, 1000 + i))
    run.prune_runs(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-2", "run-3"]


def _run_folder(tmp_path: Path, output: str) -> Path:
    """A run folder as a finished run leaves it: console, QEMU log, the job's output."""
    (tmp_path / "results").mkdir()
    (tmp_path / "serial.log").write_text("".join(f"[ {i}.0] kernel line {i}\n"
                                                 for i in range(100)))
    (tmp_path / "qemu.log").write_text("")
    (tmp_path / "results" / "output.log").write_text(output)
    return tmp_path


PYTEST_FAILURE = ("....F.\n=================== short test summary info ===================\n"
                  "FAILED tests/vm/guest/test_nic.py::test_nic - AssertionError: no ip\n"
                  "1 failed, 5 passed in 12.00s\n")


def test_a_failed_boot_shows_the_serial_console(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, "")
    result = run.qemu.GuestResult(exit_code=None, seconds=3.0, stages={"rootfs": 1.0})
    report = run.failure_report(result, folder)
    assert "serial console" in report
    assert "kernel line 99" in report


def test_failed_tests_show_their_summary_and_not_the_console(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, PYTEST_FAILURE)
    result = run.qemu.GuestResult(exit_code=1, seconds=30.0,
                                  stages={"rootfs": 1.0, "job": 9.0})
    report = run.failure_report(result, folder)
    assert "kernel line" not in report
    assert "FAILED tests/vm/guest/test_nic.py::test_nic - AssertionError: no ip" in report
    assert "1 failed, 5 passed" in report


def test_a_job_without_a_pytest_summary_shows_its_last_lines(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path, "".join(f"step {i}\n" for i in range(50)))
    result = run.qemu.GuestResult(exit_code=3, seconds=5.0, stages={"job": 2.0})
    report = run.failure_report(result, folder)
    assert "step 49" in report and "step 10" not in report
    assert "kernel line" not in report
