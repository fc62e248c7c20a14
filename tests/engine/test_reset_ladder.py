"""The reset ladder on cards that die like real ones (the simulated dying-cards machine).

Each model is recovered by the rung that fixes it, and only after the rungs before it
were tried and failed their health check; the card that never comes back ends in error
with what the user can still do.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vfiod.config import parse_config
from vfiod.engine import Engine, ResetOutcome
from vfiod.errors import InUse, ResetFailed, Timeout
from vfiod.records import State
from vfiod.sim import SimHost

from .placement import driver_of

AMD, AMD_AUDIO = "0000:01:00.0", "0000:01:00.1"  # RX 580 with the AMD reset bug
NVIDIA, NVIDIA_AUDIO = "0000:02:00.0", "0000:02:00.1"  # GTX 1070: no FLR, shared bus
NVME = "0000:03:00.0"  # FLR takes the kernel's whole 60 s, then ENOTTY; pm works
USB = "0000:04:00.0"  # never comes back once a guest used it


@pytest.fixture
def engine(dying: SimHost, tmp_path: Path) -> Engine:
    """An engine over dying-cards whose config resets the cards when a guest lets go."""
    config = parse_config("".join(
        f'[[device]]\nmatch = "{a}"\non_release = "reset"\n' for a in (AMD, NVIDIA, NVME, USB)))
    return Engine(dying, tmp_path / "state", config, write_timeout=5.0)


def group_of(engine: Engine, address: str) -> int:
    return engine.device_status(address).iommu_group


def guest_run(engine: Engine, host: SimHost, address: str) -> None:
    """A guest starts on the device's group and stops again."""
    holder = host.spawn_holder([f"/dev/vfio/{group_of(engine, address)}"])
    engine.holders_changed()
    # The holder shows (a device in error shows its error first as its state).
    assert "qemu-system-x86" in engine.device_status(address).holder
    holder.close()


def outcome_of_reset(engine: Engine, address: str) -> ResetOutcome:
    try:
        return engine.reset_outcome(address)
    except ResetFailed:
        outcome = engine.last_reset_outcome(address)
        assert outcome is not None
        return outcome


def writes_since(host: SimHost, mark: int) -> list[tuple[str, str, int]]:
    return host.write_log[mark:]


# -- what would be tried -------------------------------------------------------------
def test_planned_rungs_of_the_amd_card_on_vfio(engine: Engine, dying: SimHost) -> None:
    engine.bind(AMD)
    mark = len(dying.write_log)
    assert engine.planned_rungs(AMD) == ["flr", "bus", "hot_reset", "remove_rescan"]
    assert writes_since(dying, mark) == []


def test_planned_rungs_put_device_specific_first_once_vendor_reset_is_loaded(
        engine: Engine, dying: SimHost) -> None:
    engine.bind(AMD)
    dying.load_module("vendor_reset")
    assert engine.planned_rungs(AMD)[0] == "device_specific"


def test_planned_rungs_of_a_card_on_its_host_driver_stop_at_its_own_methods(
        engine: Engine) -> None:
    assert engine.planned_rungs(NVME) == ["flr", "pm", "bus"]


# -- each model and the rung that fixes it ------------------------------------------
def test_amd_card_no_guest_used_is_reset_by_its_first_method(engine: Engine) -> None:
    engine.bind(AMD)
    outcome = engine.reset_outcome(AMD)
    assert (outcome.method, outcome.rungs_tried, outcome.healthy) == ("flr", ("flr",), True)


def test_amd_card_after_a_guest_climbs_to_remove_and_rescan(engine: Engine,
                                                            dying: SimHost) -> None:
    engine.bind(AMD)
    guest_run(engine, dying, AMD)
    engine.holders_changed()
    outcome = engine.reset_outcome(AMD)
    assert outcome.method == "remove_rescan"
    assert outcome.rungs_tried == ("flr", "bus", "hot_reset", "remove_rescan")
    assert outcome.healthy
    assert driver_of(dying, AMD) == driver_of(dying, AMD_AUDIO) == "vfio-pci"
    status = engine.device_status(AMD)
    assert status.healthy and status.state is State.VFIO


def test_amd_card_taken_by_its_host_driver_in_the_rescan_ends_on_vfio_pci(
        engine: Engine, dying: SimHost) -> None:
    engine.bind(AMD)
    guest_run(engine, dying, AMD)
    engine.holders_changed()
    events = dying.open_events()
    try:
        engine.reset_outcome(AMD)
        time.sleep(0.2)
        seen = events.receive()
    finally:
        events.close()
    # The kernel's rescan probes what it adds, before any write can set the override.
    binds = [(e.pci_address, e.driver) for e in seen if e.action == "bind"
             and e.subsystem == "pci"]
    assert binds[:2] == [(AMD, "amdgpu"), (AMD_AUDIO, "snd_hda_intel")]
    assert sorted(binds[2:]) == [(AMD, "vfio-pci"), (AMD_AUDIO, "vfio-pci")]
    assert driver_of(dying, AMD) == driver_of(dying, AMD_AUDIO) == "vfio-pci"


def test_amd_card_rescan_is_followed_by_override_unbind_and_probe(
        engine: Engine, dying: SimHost) -> None:
    engine.bind(AMD)
    guest_run(engine, dying, AMD)
    engine.holders_changed()
    mark = len(dying.write_log)
    engine.reset_outcome(AMD)
    writes = [(p.rsplit("/", 2)[-2:], v) for p, v, _ in writes_since(dying, mark)]
    rescan = writes.index((["0000:01", "rescan"], "1"))
    override = writes.index(([AMD, "driver_override"], "vfio-pci"))
    unbind = writes.index((["driver", "unbind"], AMD))
    probe = writes.index((["pci", "drivers_probe"], AMD))
    assert rescan < override < unbind < probe


def test_amd_card_after_a_guest_with_vendor_reset_takes_device_specific(
        engine: Engine, dying: SimHost) -> None:
    dying.load_module("vendor_reset")
    engine.bind(AMD)
    guest_run(engine, dying, AMD)
    engine.holders_changed()
    outcome = engine.reset_outcome(AMD)
    assert (outcome.method, outcome.rungs_tried, outcome.healthy) == (
        "device_specific", ("device_specific",), True)
    assert engine.device_status(AMD).iommu_group == 10  # no rescan: the same group


def test_nvidia_card_without_flr_is_reset_with_its_audio_through_vfio(
        engine: Engine) -> None:
    engine.bind(NVIDIA)
    outcome = engine.reset_outcome(NVIDIA)
    assert (outcome.method, outcome.rungs_tried) == ("bus", ("bus", "hot_reset"))
    assert "ENOTTY" in engine.device_status(NVIDIA).error or outcome.healthy


def test_nvme_flr_takes_the_kernels_60_seconds_then_pm_resets_it(
        engine: Engine, dying: SimHost) -> None:
    engine.bind(NVME)
    outcome = engine.reset_outcome(NVME)
    assert (outcome.method, outcome.rungs_tried) == ("pm", ("flr", "pm"))
    assert outcome.seconds >= 60 * dying.kernel.time_scale


def test_usb_controller_that_never_comes_back_ends_in_error_with_what_is_left(
        engine: Engine, dying: SimHost) -> None:
    engine.bind(USB)
    guest_run(engine, dying, USB)
    engine.holders_changed()
    with pytest.raises(ResetFailed) as failure:
        engine.reset_outcome(USB)
    message = str(failure.value)
    assert "BAR0 not restored" in message and "Completion Timeout" in message
    assert "suspend and resume" in message and "reboot the host" in message
    outcome = engine.last_reset_outcome(USB)
    assert outcome is not None and not outcome.healthy and outcome.method == ""
    assert outcome.rungs_tried == ("pm", "bus", "remove_rescan")
    status = engine.device_status(USB)
    assert status.state is State.ERROR and not status.healthy
    assert "reboot the host" in status.error


def test_amd_card_that_stays_dead_suggests_vendor_reset(engine: Engine,
                                                        dying: SimHost) -> None:
    engine.bind(AMD)
    guest_run(engine, dying, AMD)
    engine.holders_changed()
    dying.faults.fail(f"*/{AMD}/remove", 5)  # EIO: the last rung cannot run
    with pytest.raises(ResetFailed, match="modprobe vendor_reset"):
        engine.reset_outcome(AMD)


def test_no_rung_runs_while_a_guest_holds_the_group(engine: Engine, dying: SimHost) -> None:
    engine.bind(AMD)
    mark = len(dying.write_log)
    with dying.spawn_holder([f"/dev/vfio/{group_of(engine, AMD)}"]):
        with pytest.raises(InUse):
            engine.reset_outcome(AMD)
    assert writes_since(dying, mark) == []


def test_every_rung_writes_only_the_slot_and_the_bus_files(engine: Engine,
                                                          dying: SimHost) -> None:
    engine.bind(AMD)
    guest_run(engine, dying, AMD)
    engine.holders_changed()
    mark = len(dying.write_log)
    engine.reset_outcome(AMD)
    for path, value, _ in writes_since(dying, mark):
        named = path if "/devices/" in path else value
        assert (AMD in named or AMD_AUDIO in named or path.endswith("/0000:01/rescan")
                or value == "hot reset"), (path, value)


# -- a guest that reboots twenty times ----------------------------------------------
@pytest.mark.parametrize("address, expected", [
    (AMD, ("remove_rescan", True)),
    (NVIDIA, ("bus", True)),
    (NVME, ("pm", True)),
    (USB, ("", False)),
])
def test_guest_reboots_twenty_times(engine: Engine, dying: SimHost, address: str,
                                    expected: tuple[str, bool]) -> None:
    engine.bind(address)
    outcomes: list[ResetOutcome] = []
    for _ in range(20):
        guest_run(engine, dying, address)
        engine.holders_changed()
        actions = dict(engine.release_actions())
        assert actions[address] == "reset"
        outcomes.append(outcome_of_reset(engine, address))
    print(f"\n{address}: twenty guest runs, on_release reset (kernel times x {dying.kernel.time_scale})")
    for run, o in enumerate(outcomes, 1):
        print(f"  run {run:2}: {o.method or 'FAILED':14} healthy={o.healthy!s:5} "
              f"rungs={','.join(o.rungs_tried)} {o.seconds * 1000:.0f} ms")
    assert {(o.method, o.healthy) for o in outcomes} == {expected}
    assert engine.device_status(address).healthy is expected[1]
    # The record it leaves: twenty resets; the one that never recovers is quarantined
    # (after [daemon] quarantine_after, 3 by default) with its history.
    status = engine.device_status(address)
    assert status.reset_count == 20
    if expected[1]:
        assert not status.quarantined and status.consecutive_reset_failures == 0
    else:
        assert status.quarantined and status.consecutive_reset_failures == 20
        assert f"{address} is quarantined: its last 20 reset(s) failed in a row" in \
            status.quarantine_reason


# -- a vfiod killed in the middle of a remove and rescan ----------------------------
def test_a_remove_and_rescan_a_killed_vfiod_left_is_finished_at_the_next_start(
        engine: Engine, dying: SimHost, tmp_path: Path) -> None:
    engine.bind(AMD)
    # What the rung leaves when vfiod is killed between the remove and the rescan.
    engine.journal.begin_rescan([AMD, AMD_AUDIO])
    for address in (AMD_AUDIO, AMD):
        dying.write_attr(f"/sys/bus/pci/devices/{address}/remove", "1")
    restarted = Engine(dying, tmp_path / "state", engine.config)
    assert sorted(restarted.recover()) == [AMD, AMD_AUDIO]
    assert driver_of(dying, AMD) == driver_of(dying, AMD_AUDIO) == "vfio-pci"
    assert restarted.journal.unfinished_rescans() == []


def test_a_rescan_a_killed_vfiod_left_on_the_host_driver_goes_back_to_vfio_pci(
        engine: Engine, dying: SimHost, tmp_path: Path) -> None:
    engine.bind(AMD)
    # Killed after the rescan, which gave the card to amdgpu.
    engine.journal.begin_rescan([AMD, AMD_AUDIO])
    for address in (AMD_AUDIO, AMD):
        dying.write_attr(f"/sys/bus/pci/devices/{address}/remove", "1")
    dying.write_attr("/sys/class/pci_bus/0000:01/rescan", "1")
    assert driver_of(dying, AMD) == "amdgpu"
    restarted = Engine(dying, tmp_path / "state", engine.config)
    restarted.recover()
    assert driver_of(dying, AMD) == driver_of(dying, AMD_AUDIO) == "vfio-pci"


def test_a_finished_remove_and_rescan_leaves_no_record(engine: Engine,
                                                       dying: SimHost) -> None:
    engine.bind(AMD)
    guest_run(engine, dying, AMD)
    engine.holders_changed()
    assert engine.reset_outcome(AMD).method == "remove_rescan"
    assert engine.journal.unfinished_rescans() == []


def test_an_flr_that_outlives_the_write_timeout_leaves_it_busy_then_the_climb_goes_on(
        dying: SimHost, tmp_path: Path) -> None:
    # The FLR takes 0.3 s of (scaled) kernel time; vfiod waits 0.1 s for a write.
    impatient = Engine(dying, tmp_path / "state", write_timeout=0.1)
    impatient.bind(NVME)
    with pytest.raises(Timeout, match="climbs on"):
        impatient.reset_outcome(NVME)
    assert impatient.device_status(NVME).state is State.BUSY
    deadline = time.monotonic() + 10
    while impatient.device_status(NVME).state is State.BUSY and time.monotonic() < deadline:
        time.sleep(0.05)
    outcome = impatient.last_reset_outcome(NVME)
    assert outcome is not None
    assert (outcome.method, outcome.rungs_tried, outcome.healthy) == ("pm", ("flr", "pm"), True)
    assert impatient.device_status(NVME).state is State.VFIO
    assert dying.read_text(f"/sys/bus/pci/devices/{NVME}/reset_method") == "flr pm bus"
