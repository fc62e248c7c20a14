"""``make test``'s runner (tests/tiers.py): every tier, one summary, failing if any did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiers


def _script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_pytest_totals_are_read_through_colours() -> None:
    lines = ["\x1b[32m...\x1b[0m\n",
             "\x1b[31m===== \x1b[31m\x1b[1m2 failed\x1b[0m, \x1b[32m740 passed\x1b[0m"
             " in 181.20s (0:03:01) \x1b[31m=====\x1b[0m\n"]
    assert tiers.totals(lines) == "2 failed, 740 passed in 181.20s (0:03:01)"


def test_the_vm_tier_reports_the_guest_totals_and_its_own_line() -> None:
    lines = ["====== 87 passed in 101.50s ======\n",
             "vm: real-kernel tier passed: setup 2.0 s, boot+tests 130.0 s; total 132.0 s\n"]
    assert tiers.totals(lines) == (
        "87 passed in 101.50s; passed: setup 2.0 s, boot+tests 130.0 s; "
        "total 132.0 s")


def test_quiet_pytest_totals_are_read_too() -> None:
    lines = ["87 tests collected in 2.10s\n", "....\n", "86 passed, 1 skipped in 99.10s\n"]
    assert tiers.totals(lines) == "86 passed, 1 skipped in 99.10s"


def test_no_tests_ran_is_reported() -> None:
    assert tiers.totals(["=== no tests ran in 0.01s ===\n"]) == "no tests ran in 0.01s"


def test_a_tier_that_did_not_run_says_so() -> None:
    line = "vm: the real-kernel tier was NOT run: qemu is not installed; set ..."
    assert tiers.totals([line]) == line.removeprefix("vm: ")


def test_no_tests_collected_is_a_failure() -> None:
    result = tiers.TierResult("host tier", tiers.PYTEST_NO_TESTS, 1.0, "no tests ran in 0.01s")
    assert not result.passed
    lines = tiers.summary([result])
    assert "FAILED (exit 5, no tests ran)" in lines[-2]
    assert lines[-1] == "make test: FAILED (host tier)"


def test_one_summary_names_each_tier_and_the_verdict() -> None:
    lines = tiers.summary([tiers.TierResult("host tier", 0, 180.0, "749 passed in 180.00s"),
                           tiers.TierResult("real-kernel tier", 1, 130.0, "1 failed")])
    assert lines[-3].startswith("host tier") and "passed in 180 s: 749 passed" in lines[-3]
    assert lines[-2].startswith("real-kernel tier") and "FAILED (exit 1)" in lines[-2]
    assert lines[-1] == "make test: FAILED (real-kernel tier)"


def test_a_tier_streams_its_output_and_keeps_its_exit_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _script(tmp_path, "tier", "print('working')\nprint('=== 3 passed in 0.10s ===')\n"
                                     "raise SystemExit(4)\n")
    result = tiers.run_tier("a tier", argv)
    assert result.code == 4 and not result.passed
    assert result.detail == "3 passed in 0.10s"
    assert "working" in capsys.readouterr().out


def test_every_tier_runs_when_the_first_fails(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[str] = []

    def fake_run(name: str, argv: list[str]) -> tiers.TierResult:
        ran.append(name)
        return tiers.TierResult(name, 1 if name == "host tier" else 0, 1.0, "")

    monkeypatch.setattr(tiers, "run_tier", fake_run)
    assert tiers.main([]) == 1
    assert ran == ["host tier", "real-kernel tier", "distribution tier"]
    out = capsys.readouterr().out
    assert out.count("summary of the tiers") == 1
    assert "make test: FAILED (host tier)" in out


def test_a_folder_others_cannot_enter_is_named(tmp_path: Path) -> None:
    closed = tmp_path / "root"
    repo = closed / "vfiod"
    repo.mkdir(parents=True)
    closed.chmod(0o700)
    repo.chmod(0o755)
    assert tiers.first_closed([closed, repo]) == closed


def test_folders_open_to_others_give_no_warning(tmp_path: Path) -> None:
    repo = tmp_path / "srv" / "vfiod"
    repo.mkdir(parents=True)
    for folder in (tmp_path / "srv", repo):
        folder.chmod(0o755)
    assert tiers.first_closed([tmp_path / "srv", repo]) is None



def test_the_distribution_tier_reports_its_own_closing_line() -> None:
    line = ("distro: distribution tier passed: 18 checks passed, 0 failed; base 0 s, "
            "image 80 s, boot1 300 s, boot2 200 s; total 580 s")
    assert tiers.totals(["distro: PASS boot1::reset_flr (2.0 s): ok\n", line + "\n"]) == \
        line.removeprefix("distro: distribution tier ")


def test_the_distribution_tier_not_run_is_reported_as_such() -> None:
    line = "distro: the distribution tier was NOT run: it needs root; set VFIOD_VM_OPTIONAL=1"
    assert tiers.totals([line]) == line.removeprefix("distro: ")


def test_distro_only_runs_the_distribution_tier_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, list[str]]] = []

    def fake_run(name: str, argv: list[str]) -> tiers.TierResult:
        ran.append((name, argv))
        return tiers.TierResult(name, 0, 1.0, "")

    monkeypatch.setattr(tiers, "run_tier", fake_run)
    assert tiers.main(["--distro-only"]) == 0
    assert [(name, argv[1:]) for name, argv in ran] == [
        ("distribution tier", ["-m", "tests.distro.run"])]


@pytest.mark.parametrize(("option", "expected"), [
    ("--host-only", [("host tier", ["-m", "pytest", "tests"])]),
    ("--vm-only", [("real-kernel tier", ["-m", "tests.vm.run"])]),
])
def test_each_only_option_runs_its_tier_alone(monkeypatch: pytest.MonkeyPatch, option: str,
                                              expected: list[tuple[str, list[str]]]) -> None:
    ran: list[tuple[str, list[str]]] = []

    def fake_run(name: str, argv: list[str]) -> tiers.TierResult:
        ran.append((name, argv))
        return tiers.TierResult(name, 0, 1.0, "")

    monkeypatch.setattr(tiers, "run_tier", fake_run)
    assert tiers.main([option]) == 0
    assert [(name, argv[1:]) for name, argv in ran] == expected


def test_the_integration_and_torture_tests_share_one_private_bus() -> None:
    # A session fixture defined (or imported) in two conftests is two fixtures: every
    # make test would start two dbus-daemons. --setup-plan starts nothing.
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "--setup-plan",
         "tests/integration/test_daemon_lifecycle.py::test_status_line_follows_a_bind",
         "tests/torture/test_malformed_dbus.py::"
         "test_malformed_calls_to_every_method_crash_nothing_and_write_nothing"],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SETUP    S private_bus") == 1, proc.stdout
