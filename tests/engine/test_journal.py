"""The journal is bound to its boot and checked before use; recovery rolls forward or back."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.errors import Failed
from vfiod.journal import Journal, UnsafeStateDir
from vfiod.sim import SimHost, SimulatedCrash, reboot
from vfiod.sim.host import scratch_dir

from .placement import driver_of, placement

GPU = "0000:06:00.0"
AUDIO = "0000:06:00.1"
GROUP = [GPU, AUDIO]


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory for a simulated machine that outlives its SimHost (and reboots)."""
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as scratch:
        yield Path(scratch) / "machine"


def _txn_files(state: Path) -> list[str]:
    return sorted(p.name for p in state.glob("txn-*"))


def _write_txn(state: Path, name: str, boot_id: str, members: list[dict]) -> Path:
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state / name
    path.write_text(json.dumps({"boot_id": boot_id, "operation": "bind", "members": members}))
    path.chmod(0o600)
    return path


def _crash_mid_bind(host: SimHost, state: Path, after_write: int) -> None:
    """A vfiod killed after its *after_write*-th kernel write of a Bind of the GPU."""
    engine = Engine(host, state)
    host.faults.crash_after(after_write)
    with pytest.raises(SimulatedCrash):
        engine.bind(GPU)


# -- an earlier boot ------------------------------------------------------------------------
def test_a_journal_from_an_earlier_boot_is_discarded_and_logged_and_no_device_is_touched(
        root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    with SimHost(root=root, desktop=False) as before:
        _crash_mid_bind(before, state, 2)  # the GPU is on vfio-pci, its audio not yet
        old_boot = before.boot_id()
    assert _txn_files(state) == [f"txn-{GPU}.json"]
    reboot(root)
    with SimHost(root=root, desktop=False) as after:
        assert after.boot_id() != old_boot
        # The early-boot shim has since put the audio function on vfio-pci by itself.
        after.load_module("vfio-pci")
        after.write_attr(f"/sys/bus/pci/devices/{AUDIO}/driver_override", "vfio-pci")
        after.write_attr(f"/sys/bus/pci/devices/{AUDIO}/driver/unbind", AUDIO)
        after.write_attr("/sys/bus/pci/drivers_probe", AUDIO)
        shim_left = placement(after, GROUP)
        writes = len(after.write_log)
        caplog.set_level(logging.WARNING, logger="vfiod")
        engine = Engine(after, state)
        assert engine.recover() == []
        assert placement(after, GROUP) == shim_left
        assert len(after.write_log) == writes
    assert _txn_files(state) == []
    assert any("earlier boot" in p and old_boot in p for p in engine.journal.problems)
    assert any("earlier boot" in r.getMessage() for r in caplog.records)


def test_a_journal_of_this_boot_is_still_rolled_back_after_a_restart(
        root: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with SimHost(root=root, desktop=False) as host:
        before = placement(host, GROUP)
        _crash_mid_bind(host, state, 2)
    with SimHost(root=root, desktop=False) as same_boot:
        assert sorted(Engine(same_boot, state).recover()) == GROUP
        assert placement(same_boot, GROUP) == before


def test_without_a_boot_id_nothing_is_written(host: SimHost, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "boot_id", lambda: None)
    engine = Engine(host, tmp_path / "state")
    writes = len(host.write_log)
    with pytest.raises(Failed, match="boot id"):
        engine.bind(GPU)
    assert len(host.write_log) == writes
    assert driver_of(host, GPU) == "nvidia"


# -- records checked before any path is built ---------------------------------------------
def test_a_journal_with_a_traversal_address_is_refused_and_moved_aside(
        host: SimHost, tmp_path: Path) -> None:
    state = tmp_path / "state"
    bad = _write_txn(state, f"txn-{GPU}.json", host.boot_id() or "", [
        {"address": "../../../../etc/target", "driver": "nvidia", "driver_override": None}])
    writes = len(host.write_log)
    engine = Engine(host, state)
    assert engine.recover() == []
    assert len(host.write_log) == writes
    assert not (host.root / "etc").exists()
    assert not bad.exists()
    aside = list(state.glob(f"txn-{GPU}.json.damaged-*"))
    assert len(aside) == 1 and "../../../../etc/target" in aside[0].read_text()
    assert any("damaged" in p and "address" in p for p in engine.journal.problems)


def test_a_journal_with_a_driver_name_that_is_a_path_is_refused(host: SimHost,
                                                                  tmp_path: Path) -> None:
    state = tmp_path / "state"
    _write_txn(state, f"txn-{GPU}.json", host.boot_id() or "", [
        {"address": GPU, "driver": "../../../../etc", "driver_override": None}])
    writes = len(host.write_log)
    engine = Engine(host, state)
    assert engine.recover() == []
    assert len(host.write_log) == writes
    assert len(list(state.glob("*.damaged-*"))) == 1


def test_a_damaged_journal_is_moved_aside_and_reported(
        host: SimHost, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / f"txn-{GPU}.json").write_text('{"boot_id": "torn')
    caplog.set_level(logging.WARNING, logger="vfiod")
    engine = Engine(host, state)
    assert engine.recover() == []
    aside = list(state.glob(f"txn-{GPU}.json.damaged-*"))
    assert [p.read_text() for p in aside] == ['{"boot_id": "torn']
    assert _txn_files(state) == [aside[0].name]  # kept for a human, never replayed
    assert len(engine.journal.problems) == 1 and "damaged" in engine.journal.problems[0]
    assert any("damaged" in r.getMessage() for r in caplog.records)


def test_a_damaged_host_driver_record_file_is_moved_aside_and_reported(
        host: SimHost, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "host-drivers.json").write_text(json.dumps({GPU: "../../x"}))
    engine = Engine(host, state)
    assert not (state / "host-drivers.json").exists()
    assert len(list(state.glob("host-drivers.json.damaged-*"))) == 1
    assert any("host-drivers.json" in p for p in engine.journal.problems)
    engine.bind(GPU)  # the daemon goes on, with an empty record
    assert engine.journal.host_driver(GPU) == "nvidia"


def test_a_journal_whose_name_does_not_match_its_members_is_set_aside(
        host: SimHost, tmp_path: Path) -> None:
    state = tmp_path / "state"
    _write_txn(state, "txn-0000:09:00.0.json", host.boot_id() or "", [
        {"address": GPU, "driver": "nvidia", "driver_override": None}])
    engine = Engine(host, state)
    assert engine.recover() == []
    assert len(list(state.glob("*.damaged-*"))) == 1


# -- keyed by addresses ---------------------------------------------------------------------
def test_a_transaction_is_named_by_its_lowest_member_address(host: SimHost,
                                                             tmp_path: Path) -> None:
    state = tmp_path / "state"
    _crash_mid_bind(host, state, 2)
    saved = json.loads((state / f"txn-{GPU}.json").read_text())
    assert [m["address"] for m in saved["members"]] == GROUP
    # No group number anywhere: only the boot, the operation and the members.
    assert set(saved) == {"boot_id", "operation", "members", "committed"}
    assert {k for m in saved["members"] for k in m} == {
        "address", "driver", "driver_override", "driver_after"}
    assert saved["boot_id"] == host.boot_id()


def test_a_journal_for_a_group_whose_number_changed_is_recovered_by_address(
        host: SimHost, tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = placement(host, GROUP)
    _crash_mid_bind(host, state, 2)  # the GPU on vfio-pci, its audio still on the host
    assert driver_of(host, GPU) == "vfio-pci"
    # Removed and rescanned, the audio function comes back in a new IOMMU group.
    host.write_attr(f"/sys/bus/pci/devices/{AUDIO}/remove", "1")
    host.write_attr("/sys/bus/pci/rescan", "1")
    assert host.link_name(f"/sys/bus/pci/devices/{AUDIO}/iommu_group") != "31"
    restarted = Engine(host, state)
    assert sorted(restarted.recover()) == GROUP
    assert placement(host, GROUP) == before
    assert _txn_files(state) == []


# -- the commit mark ----------------------------------------------------------------------
def test_a_bind_killed_after_its_commit_mark_is_rolled_forward(
        host: SimHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    engine = Engine(host, state)

    def killed(txn: object) -> None:
        raise SimulatedCrash("killed after the commit mark")

    monkeypatch.setattr(engine.journal, "end", killed)
    with pytest.raises(SimulatedCrash):
        engine.bind(GPU)
    saved = json.loads((state / f"txn-{GPU}.json").read_text())
    assert saved["committed"] is True
    writes = len(host.write_log)
    restarted = Engine(host, state)
    assert sorted(restarted.recover()) == GROUP
    assert [driver_of(host, a) for a in GROUP] == ["vfio-pci", "vfio-pci"]  # not back
    assert len(host.write_log) == writes
    assert _txn_files(state) == []


def test_an_unbind_rolled_forward_records_where_the_members_went(
        host: SimHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    engine = Engine(host, state)
    engine.bind(GPU)
    engine.journal.remember_host_drivers({GPU: "nouveau"})  # stale, from another life
    monkeypatch.setattr(engine.journal, "end", lambda txn: (_ for _ in ()).throw(
        SimulatedCrash("killed after the commit mark")))
    monkeypatch.setattr(engine.journal, "remember_host_drivers", lambda drivers: None)
    with pytest.raises(SimulatedCrash):
        engine.unbind(GPU)
    restarted = Engine(host, state)
    assert restarted.journal.host_driver(GPU) == "nouveau"
    assert sorted(restarted.recover()) == GROUP
    assert [driver_of(host, a) for a in GROUP] == ["nvidia", "snd_hda_intel"]
    assert restarted.journal.host_driver(GPU) == "nvidia"


def test_a_bind_killed_after_its_last_write_but_before_the_commit_mark_rolls_back(
        host: SimHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    before = placement(host, GROUP)
    engine = Engine(host, state)

    def killed(txn: object, after: object) -> None:
        raise SimulatedCrash("killed before the commit mark")

    monkeypatch.setattr(engine.journal, "commit", killed)
    with pytest.raises(SimulatedCrash):
        engine.bind(GPU)
    assert sorted(Engine(host, state).recover()) == GROUP
    assert placement(host, GROUP) == before


# -- the state directory ------------------------------------------------------------------
def test_a_state_directory_others_can_write_is_refused(host: SimHost, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(UnsafeStateDir, match=r"writable by others \(mode 0777\).*chmod go-w"):
        Engine(host, state)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
def test_a_state_directory_of_another_user_is_refused(host: SimHost, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, os.geteuid() + 1, -1)
    with pytest.raises(UnsafeStateDir, match="owned by uid"):
        Engine(host, state)


def test_a_file_in_the_state_directory_others_can_write_is_refused(
        host: SimHost, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "host-drivers.json").write_text("{}")
    (state / "host-drivers.json").chmod(0o666)
    with pytest.raises(UnsafeStateDir, match="host-drivers.json is writable by others"):
        Engine(host, state)


def test_a_symbolic_link_in_the_state_directory_is_refused(host: SimHost,
                                                            tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / f"txn-{GPU}.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(UnsafeStateDir, match="not a regular file"):
        Engine(host, state)


def test_a_rolled_forward_member_someone_moved_since_is_left_where_it_is(
        host: SimHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    engine = Engine(host, state)
    monkeypatch.setattr(engine.journal, "end", lambda txn: (_ for _ in ()).throw(
        SimulatedCrash("killed after the commit mark")))
    with pytest.raises(SimulatedCrash):
        engine.bind(GPU)
    # Before the restart, a user gives the audio function back to the host.
    host.write_attr(f"/sys/bus/pci/devices/{AUDIO}/driver_override", "\n")
    host.write_attr(f"/sys/bus/pci/devices/{AUDIO}/driver/unbind", AUDIO)
    host.write_attr("/sys/bus/pci/drivers_probe", AUDIO)
    writes = len(host.write_log)
    caplog.set_level(logging.WARNING, logger="vfiod")
    assert sorted(Engine(host, state).recover()) == GROUP
    assert [driver_of(host, a) for a in GROUP] == ["vfio-pci", "snd_hda_intel"]
    assert len(host.write_log) == writes
    assert any(AUDIO in r.getMessage() and "left there" in r.getMessage()
               for r in caplog.records)


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the path of every file or directory fsynced, in order."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_a_bind_and_an_unbind_flush_nothing_to_disk_once_the_host_drivers_are_known(
        host: SimHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Transaction files belong to one boot: a power cut is a new boot, which discards
    # them whatever reached the disk; a killed daemon's are in the page cache.
    state = tmp_path / "state"
    engine = Engine(host, state)
    engine.bind(GPU)
    engine.unbind(GPU)  # the host drivers are recorded by now (durably)
    synced = _record_fsyncs(monkeypatch)
    engine.bind(GPU)
    engine.unbind(GPU)
    assert synced == []
    assert not list(state.glob("txn-*"))


def test_a_changed_host_driver_record_is_flushed_with_its_directory(
        host: SimHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    synced = _record_fsyncs(monkeypatch)
    Engine(host, state).bind(GPU)  # records where the pair came from: it outlives boots
    assert synced[-1] == str(state)
    assert all(p == str(state) or p.startswith(f"{state}/.host-drivers.json.") for p in synced)


# -- removes and rescans left behind ----------------------------------------------------------
def test_a_rescan_left_behind_with_the_boot_id_unknown_is_reported_and_left_in_place(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    Journal(state, str(uuid.uuid4())).begin_rescan(GROUP)
    unknown = Journal(state, None)
    assert unknown.unfinished_rescans() == []
    assert unknown.problems == [
        f"rescan-{GPU}.json: the kernel's boot id could not be read, so the remove and "
        "rescan's boot is unknown: left in place, not replayed"]
    assert [p.name for p in state.glob("rescan-*")] == [f"rescan-{GPU}.json"]


def test_a_rescan_of_an_earlier_boot_is_reported_and_discarded(tmp_path: Path) -> None:
    state, old = tmp_path / "state", str(uuid.uuid4())
    Journal(state, old).begin_rescan(GROUP)
    journal = Journal(state, str(uuid.uuid4()))
    assert journal.unfinished_rescans() == []
    assert journal.problems == [
        f"rescan-{GPU}.json: a remove and rescan of {GPU}, {AUDIO} from an earlier boot "
        f"({old}): discarded, not replayed"]
    assert list(state.glob("rescan-*")) == []


def test_a_rescan_of_this_boot_is_returned_and_a_misnamed_one_set_aside(
        tmp_path: Path) -> None:
    state, now = tmp_path / "state", str(uuid.uuid4())
    journal = Journal(state, now)
    record = journal.begin_rescan(GROUP)
    misnamed = state / "rescan-0000:07:00.0.json"
    misnamed.write_text(record.model_dump_json())
    misnamed.chmod(0o600)
    assert journal.unfinished_rescans() == [record]
    assert len(journal.problems) == 1 and "does not match its members" in journal.problems[0]
    assert len(list(state.glob("rescan-0000:07:00.0.json.damaged-*"))) == 1
