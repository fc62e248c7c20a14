"""The group node as the fence, and writes that outlive their timeout (issue 8, items 2-3).

Unbind and Reset open /dev/vfio/N first: a guest holding the group any way at all (its
node, a device fd only, the iommufd cdev only) is refused at once, named, and nothing is
written; the fence is held through the transaction. A write the kernel keeps past the
timeout leaves the group busy with the reason, and the engine finishes by itself.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.errors import InUse, Timeout
from vfiod.records import State
from vfiod.sim import SimHost

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"
NIC_61 = "0000:02:00.0"  # the 6.1 test guest's e1000e, alone in IOMMU group 10


@pytest.fixture
def kernel61(tmp_path: Path) -> Iterator[tuple[SimHost, Engine]]:
    """The 6.1 test guest (a device fd is an anonymous inode) with its NIC on vfio-pci."""
    host = SimHost(profile="test-guest")
    try:
        engine = Engine(host, tmp_path / "state", write_timeout=5.0)
        engine.bind(NIC_61)
        yield host, engine
    finally:
        host.close()


def unbinds_written(host: SimHost) -> list[str]:
    return [path for path, _value, _err in host.write_log if path.endswith("unbind")]


def timed(call: object) -> tuple[BaseException, float]:
    began = time.monotonic()
    with pytest.raises(InUse) as refused:
        call()  # type: ignore[operator]
    return refused.value, time.monotonic() - began


def test_unbind_with_only_a_device_fd_held_is_refused_at_once_naming_the_pid(
        kernel61: tuple[SimHost, Engine]) -> None:
    host, engine = kernel61
    writes = len(host.write_log)
    with host.spawn_holder([], device_fds=[NIC_61]) as guest:
        refused, took = timed(lambda: engine.unbind(NIC_61))
        assert f"qemu-system-x86 (pid {guest.pid}) through a VFIO device fd" in str(refused)
        assert took < 1.0
        assert host.write_log[writes:] == []  # not even driver_override
    assert engine.device_status(NIC_61).driver == "vfio-pci"


def test_reset_with_only_a_device_fd_held_is_refused_at_once_naming_the_pid(
        kernel61: tuple[SimHost, Engine]) -> None:
    host, engine = kernel61
    with host.spawn_holder([], device_fds=[NIC_61]) as guest:
        refused, took = timed(lambda: engine.reset(NIC_61))
        assert f"pid {guest.pid}" in str(refused) and took < 1.0
    assert not any(p.endswith("/reset") for p, _v, _e in host.write_log)


def test_the_kernel_vouched_holder_of_a_device_fd_shows_in_status(
        kernel61: tuple[SimHost, Engine]) -> None:
    host, engine = kernel61
    with host.spawn_holder([], device_fds=[NIC_61]) as guest:
        with pytest.raises(InUse):
            engine.unbind(NIC_61)
        engine.holders_changed()
        row = engine.device_status(NIC_61)
        assert row.state is State.GUEST and row.holder_pid == guest.pid
    engine.holders_changed()
    assert engine.device_status(NIC_61).state is State.VFIO
    assert engine.release_actions() == [(NIC_61, "keep")]


def test_unbind_with_only_the_cdev_held_is_refused_naming_the_cdev(
        engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    unbinds = len(unbinds_written(host))
    with host.spawn_holder([], device_fds=[GPU]) as guest:
        refused, took = timed(lambda: engine.unbind(GPU))
        assert f"qemu-system-x86 (pid {guest.pid}) through /dev/vfio/devices/" in str(refused)
        assert took < 1.0
    assert len(unbinds_written(host)) == unbinds
    assert engine.device_status(GPU).driver == "vfio-pci"


def test_a_device_fd_got_through_the_group_on_a_cdev_kernel_is_refused_too(
        engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    with host.spawn_holder([], device_fds=[f"@{GPU}"]) as guest:
        refused, took = timed(lambda: engine.unbind(GPU))
        assert f"(pid {guest.pid}) through a VFIO device fd" in str(refused) and took < 1.0


def test_a_guest_on_the_cdev_only_counts_as_a_guest(engine: Engine, host: SimHost) -> None:
    engine.bind(GPU)
    with host.spawn_holder([], device_fds=[GPU]) as guest:
        engine.holders_changed()
        row = engine.device_status(GPU)
        assert row.state is State.GUEST and row.holder_pid == guest.pid
        assert engine.device_status(AUDIO).state is State.GUEST  # the group is held
        assert guest.pid in engine.holder_pids()
    engine.holders_changed()
    assert engine.device_status(GPU).state is State.VFIO
    assert sorted(engine.release_actions()) == [(GPU, "keep"), (AUDIO, "keep")]


def test_no_guest_can_open_the_group_while_an_unbind_runs(engine: Engine,
                                                           host: SimHost) -> None:
    engine.bind(GPU)
    host.faults.delay("*/driver_override", 0.3, times=2)
    attempts: list[int] = []

    def guest_tries() -> None:
        time.sleep(0.1)  # the unbind is in its first write by now
        try:
            host.spawn_holder(["/dev/vfio/31"]).close()
            attempts.append(0)
        except OSError as exc:
            attempts.append(exc.errno or 0)

    trying = threading.Thread(target=guest_tries)
    trying.start()
    assert engine.unbind(GPU) == [GPU, AUDIO]
    trying.join()
    assert attempts == [errno.EBUSY]


def test_status_answers_while_a_refused_guest_holds_the_group(
        kernel61: tuple[SimHost, Engine]) -> None:
    host, engine = kernel61
    with host.spawn_holder([], device_fds=[NIC_61]):
        with pytest.raises(InUse):
            engine.unbind(NIC_61)
        began = time.monotonic()
        assert any(row.address == NIC_61 for row in engine.status())
        assert time.monotonic() - began < 1.0


# -- a write that outlives its timeout ---------------------------------------------------

@pytest.fixture
def quick(host: SimHost, tmp_path: Path) -> Engine:
    """An engine that gives a kernel write 0.3 s."""
    return Engine(host, tmp_path / "state", write_timeout=0.3)


def blocked(engine: Engine, host: SimHost, operation: str, address: str,
            write: str) -> threading.Event:
    """Run *operation* with its write to *write* kept in the kernel for 1 s: it answers
    Timeout; the event is set once the engine has finished it by itself."""
    done = threading.Event()
    engine.set_listener(lambda addresses: done.set())
    host.faults.delay(write, 1.0, times=1)
    with pytest.raises(Timeout):
        getattr(engine, operation)(address)
    return done


def test_a_blocked_unbind_leaves_the_group_busy_with_the_reason(quick: Engine,
                                                               host: SimHost) -> None:
    quick.bind(GPU)
    host.faults.delay("*/unbind", 1.5, times=1)
    began = time.monotonic()
    with pytest.raises(Timeout) as timed_out:
        quick.unbind(GPU)
    assert time.monotonic() - began < 1.0
    assert "finishes the unbind by itself" in str(timed_out.value)
    for address in (GPU, AUDIO):
        row = quick.device_status(address)
        assert row.state is State.BUSY
        assert "unbind" in row.error and "blocked in the kernel since" in row.error


def test_nothing_touches_a_group_whose_write_is_in_the_kernel(quick: Engine,
                                                             host: SimHost) -> None:
    quick.bind(GPU)
    host.faults.delay("*/unbind", 1.5, times=1)
    with pytest.raises(Timeout):
        quick.unbind(GPU)
    writes = len(host.write_log)
    for operation in (quick.unbind, quick.bind, quick.reset):
        with pytest.raises(Timeout) as refused:
            operation(AUDIO)
        assert "busy until the kernel returns" in str(refused.value)
    assert len(host.write_log) == writes


def test_a_blocked_unbind_finishes_by_itself_when_the_kernel_returns(quick: Engine,
                                                                    host: SimHost) -> None:
    quick.bind(GPU)
    told: list[list[str]] = []
    done = threading.Event()
    quick.set_listener(lambda addresses: (told.append(addresses), done.set()))
    host.faults.delay("*/unbind", 1.0, times=1)
    with pytest.raises(Timeout):
        quick.unbind(GPU)
    assert done.wait(5.0)
    assert told == [[GPU, AUDIO]]
    assert quick.device_status(GPU).state is State.HOST
    assert quick.device_status(GPU).driver == "nvidia"
    assert quick.device_status(AUDIO).driver == "snd_hda_intel"
    assert quick.device_status(GPU).error == ""
    assert not quick.journal.unfinished()


def test_a_blocked_bind_finishes_by_itself_and_verifies(quick: Engine, host: SimHost) -> None:
    done = blocked(quick, host, "bind", GPU, "/sys/bus/pci/drivers_probe")
    assert done.wait(5.0)
    assert [quick.device_status(a).state for a in (GPU, AUDIO)] == [State.VFIO, State.VFIO]


def test_recovery_leaves_a_group_a_guest_holds_for_the_next_start(
        engine: Engine, host: SimHost, tmp_path: Path) -> None:
    from vfiod.sim import SimulatedCrash

    engine.bind(GPU)
    host.faults.crash_after(0)  # killed right after the unbind's first write
    with pytest.raises(SimulatedCrash):
        engine.unbind(GPU)
    host.faults.clear()
    with host.spawn_holder(["/dev/vfio/31"]):
        restarted = Engine(host, tmp_path / "state", write_timeout=5.0)
        assert restarted.recover() == []
        assert len(restarted.journal.unfinished()) == 1
        assert "is in use by qemu-system-x86" in restarted.device_status(GPU).error
    again = Engine(host, tmp_path / "state", write_timeout=5.0)
    assert sorted(again.recover()) == [GPU, AUDIO]
    assert again.journal.unfinished() == []
    assert again.device_status(GPU).driver == "vfio-pci"


def test_a_blocked_unbind_finishing_by_itself_writes_the_commit_mark_with_the_drivers(
        quick: Engine, host: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    quick.bind(GPU)
    marks: list[dict[str, str | None]] = []
    commit = quick.journal.commit
    monkeypatch.setattr(quick.journal, "commit",
                        lambda txn, after: (marks.append(dict(after)), commit(txn, after))[1])
    done = blocked(quick, host, "unbind", GPU, "*/unbind")
    assert marks == []  # nothing is committed while the write is in the kernel
    assert done.wait(5.0)
    assert marks == [{GPU: "nvidia", AUDIO: "snd_hda_intel"}]
    assert not quick.journal.unfinished()


def test_a_blocked_unbind_with_a_stale_host_driver_finishes_on_the_kernels_choice(
        quick: Engine, host: SimHost) -> None:
    quick.bind(GPU)
    quick.journal.remember_host_drivers({GPU: "nouveau"})  # module gone since
    assert blocked(quick, host, "unbind", GPU, "*/unbind").wait(5.0)
    row = quick.device_status(GPU)
    assert (row.state, row.driver, row.error) == (State.HOST, "nvidia", "")
    assert quick.journal.host_driver(GPU) == "nvidia"


def test_recovery_rolls_a_committed_bind_forward_while_a_guest_holds_the_group(
        engine: Engine, host: SimHost, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from vfiod.sim import SimulatedCrash

    monkeypatch.setattr(engine.journal, "end", lambda txn: (_ for _ in ()).throw(
        SimulatedCrash("killed after the commit mark")))
    with pytest.raises(SimulatedCrash):
        engine.bind(GPU)
    with host.spawn_holder(["/dev/vfio/31"]):  # a roll-forward writes nothing: no fence
        restarted = Engine(host, tmp_path / "state", write_timeout=5.0)
        assert sorted(restarted.recover()) == [GPU, AUDIO]
        assert restarted.journal.unfinished() == []
        assert restarted.device_status(GPU).driver == "vfio-pci"


def test_a_failed_bind_is_not_rolled_back_under_a_guest_that_took_the_group_half_way(
        engine: Engine, host: SimHost, monkeypatch: pytest.MonkeyPatch) -> None:
    # The GPU is on vfio-pci (its group node exists) when a guest opens the group, and
    # then the audio function's step fails: rolling back would write unbind into devices
    # the guest holds. The fence refuses; the journal waits for a free group.
    guests = []
    write = host._write

    def guest_first_then_fail(path: str, value: str) -> None:
        if path.endswith(f"{AUDIO}/driver_override") and not guests:
            guests.append(host.spawn_holder(["/dev/vfio/31"]))
            raise OSError(errno.EIO, "injected")
        write(path, value)

    monkeypatch.setattr(host, "_write", guest_first_then_fail)
    try:
        with pytest.raises(Exception, match="not rolled back: a process opened the IOMMU "
                                            f"group of {GPU}"):
            engine.bind(GPU)
        assert engine.device_status(GPU).driver == "vfio-pci"
        assert not [p for p in unbinds_written(host) if GPU in p and "vfio-pci" in p]
    finally:
        for guest in guests:
            guest.close()
    monkeypatch.setattr(host, "_write", write)
    # Free again: the next start rolls the bind back.
    engine.recover()
    assert engine.device_status(GPU).driver == "nvidia"
    assert engine.device_status(AUDIO).driver == "snd_hda_intel"
