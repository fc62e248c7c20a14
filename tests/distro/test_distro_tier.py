"""The distribution tier's own host-side tests: cache key, machine, refusals, reporting.

They need neither root nor QEMU; the tier itself runs from tests/distro/run.py.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.distro import image, machine, run
from tests.distro.guest import checks
from tests.vm.marker import GUEST_MARKER

CHECKS_SCRIPT = Path(checks.__file__)


def test_the_base_key_is_stable_for_the_same_release_packages_and_script() -> None:
    assert image.base_key("bookworm", ("a", "b"), b"x") == image.base_key(
        "bookworm", ("b", "a"), b"x")


def test_a_changed_package_list_builds_a_new_base() -> None:
    assert image.base_key("bookworm", ("a",), b"x") != image.base_key(
        "bookworm", ("a", "b"), b"x")


def test_a_changed_release_builds_a_new_base() -> None:
    assert image.base_key("bookworm", ("a",), b"x") != image.base_key("trixie", ("a",), b"x")


def test_a_changed_setup_script_builds_a_new_base() -> None:
    assert image.base_key("bookworm", ("a",), b"x") != image.base_key(
        "bookworm", ("a",), b"y")


def test_the_image_has_polkitd_with_the_logind_debootstrap_does_not_resolve() -> None:
    assert {"polkitd", "libpam-systemd", "systemd-sysv"} <= set(image.PACKAGES)


def test_the_guest_kernel_line_carries_the_marker_and_the_boot_number() -> None:
    words = machine.kernel_cmdline(2).split()
    assert GUEST_MARKER in words
    assert "vfiod.distroboot=2" in words
    assert "root=/dev/vda" in words


def test_the_guest_kernel_skips_the_timer_check_a_slow_tcg_host_fails() -> None:
    assert "no_timer_check" in machine.kernel_cmdline(1).split()


def test_the_machine_has_an_iommu_with_interrupt_remapping() -> None:
    command = machine.qemu_command(Path("k"), Path("i"), Path("d"), Path("s"), 1)
    assert "intel-iommu,intremap=on,caching-mode=on" in command
    assert command[command.index("-accel") + 1] == "tcg,thread=multi"


def test_every_network_backend_is_user_mode_and_restricted() -> None:
    command = machine.qemu_command(Path("k"), Path("i"), Path("d"), Path("s"), 1)
    netdevs = [command[i + 1] for i, word in enumerate(command) if word == "-netdev"]
    assert len(netdevs) == 2
    assert all(n.startswith("user,") and "restrict=on" in n for n in netdevs)


def test_the_config_claims_the_boot_nic_at_boot_and_nothing_else() -> None:
    assert f'@{checks.BOOT_NIC}"\nname = "boot-nic"\nboot = "vfio"' in image.CONFIG
    assert image.CONFIG.count('boot = "vfio"') == 1


def test_the_guest_script_refuses_without_the_marker() -> None:
    proc = subprocess.run([sys.executable, str(CHECKS_SCRIPT)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "refusing to run" in proc.stderr
    assert proc.stdout == ""


def test_the_boot_number_comes_from_the_kernel_line() -> None:
    assert checks.boot_number(f"root=/dev/vda {GUEST_MARKER} vfiod.distroboot=2 quiet") == 2
    assert checks.boot_number("root=/dev/vda vfiod.distroboot=") == 0
    assert checks.boot_number("xvfiod.distroboot=1") == 0


def test_every_check_has_a_unique_reported_name_and_says_what_it_checks() -> None:
    names = [f"{checks.BOOT_LABELS[n]}::{checks.check_name(c)}"
             for n, boot in checks.BOOTS.items() for c in boot]
    assert len(names) == len(set(names))
    assert all(c.__doc__ for boot in checks.BOOTS.values() for c in boot)


def test_the_dracut_layer_is_rebuilt_with_a_new_base() -> None:
    assert image.dracut_key("base-a") != image.dracut_key("base-b")


def test_the_dracut_layer_is_rebuilt_when_its_package_list_changes() -> None:
    assert image.dracut_key("k", ("dracut",)) != image.dracut_key("k", ("dracut", "x"))
    assert image.dracut_key("k", ("dracut",)) == image.dracut_key("k", ("dracut",))


def test_the_third_boot_checks_the_shim_on_the_image_dracut_built() -> None:
    assert checks.BOOT_GENERATORS[3] == "dracut" and checks.BOOT_LABELS[3] == "dracut"
    assert [checks.check_name(c) for c in checks.BOOTS[3]] == [
        "boot_claim", "claimed_by_dracut_hook", "service_ready", "doctor_live"]
    assert {checks.BOOT_GENERATORS[n] for n in (1, 2)} == {"initramfs-tools"}


def test_every_boot_has_a_label_and_an_image_built_by_a_known_generator() -> None:
    assert set(checks.BOOT_LABELS) == set(checks.BOOTS) == set(checks.BOOT_GENERATORS)
    assert set(checks.BOOT_GENERATORS.values()) <= set(image.REBUILD)


def test_each_image_rebuilds_its_initramfs_with_its_own_generator() -> None:
    assert image.REBUILD["dracut"][0] == "dracut"
    assert "--regenerate-all" in image.REBUILD["dracut"]
    assert image.REBUILD["initramfs-tools"][0] == "update-initramfs"


def test_the_dracut_boot_is_reported_under_its_label() -> None:
    result = run.Boot(3, seconds=100.0, outcomes=[
        {"name": "boot_claim", "passed": True, "seconds": 2.0, "detail": "ok"}])
    code, text = run.report([result], 1.0, 0.0)
    assert code == 0
    assert "distro: PASS dracut::boot_claim (2.0 s): ok" in text
    assert "dracut 100 s" in text


def test_a_failing_check_is_reported_and_the_next_one_still_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def check_first(ev: checks.Evidence) -> str:
        ev.note("looked")
        raise checks.CheckFailed("it was not so")

    def check_second(ev: checks.Evidence) -> str:
        return "fine"

    monkeypatch.setitem(checks.BOOTS, 9, (check_first, check_second))
    outcomes = checks.run_boot(9, tmp_path)
    assert [(o["name"], o["passed"], o["detail"]) for o in outcomes] == [
        ("first", False, "it was not so"), ("second", True, "fine")]
    assert (tmp_path / "first.log").read_text() == "looked\n"
    assert json.loads((tmp_path / "results.json").read_text()) == outcomes


def test_a_check_the_guest_never_reported_fails(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_read(disk: Path, dest: Path, guest_dir: str) -> None:
        assert guest_dir == "/var/log/vfiod-distro/boot2"
        folder = dest / "boot2"
        folder.mkdir(parents=True)
        first = checks.check_name(checks.BOOTS[2][0])
        (folder / "results.json").write_text(json.dumps(
            [{"name": first, "passed": True, "seconds": 1.0, "detail": "ok"}]))

    monkeypatch.setattr(run, "read_results", fake_read)
    result = run.Boot(2, timed_out=True)
    run.collect(image.Image(tmp_path / "d", tmp_path / "k", tmp_path / "i"), tmp_path,
                result)
    assert [o["passed"] for o in result.outcomes] == [True] + [False] * (
        len(checks.BOOTS[2]) - 1)
    assert "the boot timed out" in str(result.outcomes[1]["detail"])
    code, text = run.report([result], 1.0, 0.0)
    assert code == run.EXIT_FAILED
    assert f"1 checks passed, {len(checks.BOOTS[2]) - 1} failed" in text


def test_the_tier_that_cannot_run_fails_unless_optional(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("VFIOD_VM_OPTIONAL", raising=False)
    assert run.not_run("no QEMU") == run.EXIT_NOT_RUN
    monkeypatch.setenv("VFIOD_VM_OPTIONAL", "1")
    assert run.not_run("no QEMU") == 0
    out = capsys.readouterr().out
    assert out.count("distro: the distribution tier was NOT run: no QEMU") == 2


def test_the_image_gets_the_tracked_files_of_the_checkout_only(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "tracked.txt").write_text("edited\n")
    (repo / "untracked.txt").write_text("x\n")
    subprocess.run(["git", "-C", str(repo), "add", "tracked.txt"], check=True)
    image.copy_checkout(tmp_path / "dest", repo)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["tracked.txt"]
    assert (tmp_path / "dest" / "tracked.txt").read_text() == "edited\n"


def test_the_guest_check_lines_are_streamed_from_the_serial_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    serial = tmp_path / "serial.log"
    serial.write_bytes(b"[  1.0] kernel\r\n[  OK  ] vfiod-distro: PASS x (1.0 s): y\r\n"
                       b"vfiod-distro: half a li")
    offset = run._follow(serial, 0)
    assert capsys.readouterr().out == "distro: PASS x (1.0 s): y\n"
    assert offset == serial.read_bytes().rfind(b"\n") + 1


def test_the_check_unit_powers_the_guest_off_however_the_checks_end() -> None:
    unit = image.CHECK_UNIT
    assert "SuccessAction=poweroff" in unit and "FailureAction=poweroff" in unit
    assert "RuntimeMaxSec=" in unit


def _held_by_another(path: Path) -> bool:
    with open(path, "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


def test_the_boots_wait_for_the_machine_lock_another_tier_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock_path = tmp_path / "vm.lock"
    monkeypatch.setenv("VFIOD_VM_LOCK", str(lock_path))
    started = time.monotonic()
    holder = subprocess.Popen(["flock", str(lock_path), "sleep", "1"],
                              stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _held_by_another(lock_path):
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        with run.machine_lock():
            assert time.monotonic() - started >= 1.0  # only once its second was over
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_a_cached_layer_is_built_once_per_key_and_an_older_keys_layer_is_dropped(
        tmp_path: Path) -> None:
    built: list[str] = []

    def build(staging: Path, log: Path) -> None:
        staging.mkdir()
        (staging / "etc").mkdir()
        log.write_text("built\n")
        built.append(staging.name)

    first = image._cached_layer(tmp_path, "base", "k1", build)
    again = image._cached_layer(tmp_path, "base", "k1", build)
    assert first.root == again.root == tmp_path / "base-k1"
    assert built == ["base-k1.building"]  # the second call found it cached
    assert (tmp_path / "base-k1.done").read_text() == "k1\n"
    newer = image._cached_layer(tmp_path, "base", "k2", build)
    assert newer.root.is_dir() and (newer.root / "etc").is_dir()
    assert not (tmp_path / "base-k1").exists() and not (tmp_path / "base-k1.done").exists()
    assert not (tmp_path / "base-k2.building").exists()
    assert (tmp_path / "debs").is_dir()


def test_a_polkit_rule_is_noted_and_removed_also_when_the_check_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "RULES", tmp_path)
    ev = checks.Evidence(tmp_path / "evidence.log")
    with pytest.raises(checks.CheckFailed):
        with checks.polkit_rule(ev, "alice", 'subject.user == "alice"') as rule:
            assert rule == tmp_path / "50-vfiod-alice.rules"
            assert f'action.id == "{checks.ACTION}" && subject.user == "alice"' in \
                rule.read_text()
            raise checks.CheckFailed("the bind was denied")
    ev.close()
    assert not rule.exists()
    assert f"# {rule}:\npolkit.addRule(" in (tmp_path / "evidence.log").read_text()
