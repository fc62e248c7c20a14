"""Dry runs on seed-x99: every operation on every group plans what the real run then does,
and the planning writes nothing to the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.engine.plan import HOT_RESET, Plan
from vfiod.errors import InUse, ResetFailed, VfiodError
from vfiod.sim import SimHost

from .placement import driver_of

#: One endpoint of every IOMMU group of seed-x99 that has endpoints.
GROUPS = {
    5: "0000:00:11.4", 6: "0000:00:14.0", 8: "0000:00:19.0", 9: "0000:00:1b.0",
    12: "0000:00:1f.2", 30: "0000:05:00.0", 31: "0000:06:00.0", 32: "0000:09:00.0",
    40: "0000:11:00.0",
}
ADDRESSES = pytest.mark.parametrize("address", GROUPS.values(),
                                    ids=[f"group{g}" for g in GROUPS])


def tree(host: SimHost) -> dict[str, str]:
    """Every file and link of the simulated machine (the model's own lock files aside):
    contents and link targets, by path."""
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(host.root):
        dirs[:] = [d for d in dirs if not d.startswith(".sim-")]
        for name in dirs + files:
            path = os.path.join(top, name)
            if name.startswith(".sim-"):
                continue
            if os.path.islink(path):
                found[path] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    found[path] = f.read(4096).hex()
    return found


def dry_run(engine: Engine, host: SimHost, op: str, address: str, **options: bool) -> Plan:
    """The plan of one operation, checked to have written nothing and loaded nothing."""
    writes, files = list(host.write_log), tree(host)
    vfio_loaded = host.module_loaded("vfio_pci")
    plan = engine.plan(op, address, **options)
    assert host.write_log == writes
    assert tree(host) == files
    assert host.module_loaded("vfio_pci") == vfio_loaded
    return plan


def real_run(engine: Engine, op: str, address: str, **options: bool
             ) -> list[str] | str | VfiodError:
    """What the real call answers: its result, or the error it raised."""
    try:
        return engine.run(op, address, **options)
    except VfiodError as exc:
        return exc


def assert_same_outcome(plan: Plan, host: SimHost,
                        outcome: list[str] | str | VfiodError) -> None:
    """The real bind or unbind did what the plan said: the same error, or the same
    members moved, each to the driver the plan named."""
    if plan.refusal is not None:
        assert isinstance(outcome, VfiodError), outcome
        assert (type(outcome), str(outcome)) == (type(plan.refusal), str(plan.refusal))
        return
    assert outcome == plan.moves
    for step in plan.members:
        assert (driver_of(host, step.address) or "") == step.to_driver, step


@ADDRESSES
def test_dry_bind_plans_what_the_bind_does(engine: Engine, host: SimHost,
                                           address: str) -> None:
    plan = dry_run(engine, host, "bind", address)
    assert_same_outcome(plan, host, real_run(engine, "bind", address))


@ADDRESSES
def test_dry_forced_bind_plans_what_the_forced_bind_does(engine: Engine, host: SimHost,
                                                         address: str) -> None:
    plan = dry_run(engine, host, "bind", address, force=True)
    assert_same_outcome(plan, host, real_run(engine, "bind", address, force=True))


@ADDRESSES
def test_dry_unbind_plans_what_the_unbind_does(engine: Engine, host: SimHost,
                                               address: str) -> None:
    real_run(engine, "bind", address, force=True)  # the host's disk controller stays
    plan = dry_run(engine, host, "unbind", address)
    assert_same_outcome(plan, host, real_run(engine, "unbind", address))


@ADDRESSES
def test_dry_unbind_of_a_single_function_plans_what_it_does(
        engine: Engine, host: SimHost, address: str) -> None:
    real_run(engine, "bind", address, force=True)
    plan = dry_run(engine, host, "unbind", address, group=False)
    assert_same_outcome(plan, host, real_run(engine, "unbind", address, group=False))


@pytest.mark.parametrize("bound", [False, True], ids=["on-host", "on-vfio"])
@ADDRESSES
def test_dry_reset_plans_the_rungs_the_reset_climbs(engine: Engine, host: SimHost,
                                                    address: str, bound: bool) -> None:
    if bound:
        real_run(engine, "bind", address, force=True)
    plan = dry_run(engine, host, "reset", address)
    outcome = real_run(engine, "reset", address)
    if plan.refusal is not None and not isinstance(plan.refusal, ResetFailed):
        assert (type(outcome), str(outcome)) == (type(plan.refusal), str(plan.refusal))
        return
    answers = ["bus" if r == HOT_RESET else r for r in plan.rungs]
    if isinstance(outcome, str):
        assert outcome in answers  # a rung the plan named worked
    else:
        # Every planned rung was tried and failed (the device decides, not the plan).
        assert isinstance(outcome, ResetFailed), outcome
        assert all(r.split("_")[0] in str(outcome) for r in plan.rungs)


def test_plan_names_each_member_with_its_drivers(engine: Engine) -> None:
    plan = engine.plan("bind", "0000:06:00.0")
    assert [(m.address, m.from_driver, m.to_driver) for m in plan.members] == [
        ("0000:06:00.0", "nvidia", "vfio-pci"), ("0000:06:00.1", "snd_hda_intel", "vfio-pci")]
    assert plan.modules == ["vfio-pci"]
    assert plan.answer() == ["0000:06:00.0", "0000:06:00.1"]


def test_plan_of_an_unbind_names_the_host_drivers_they_return_to(engine: Engine) -> None:
    engine.bind("0000:06:00.0")
    plan = engine.plan("unbind", "0000:06:00.0")
    assert [(m.from_driver, m.to_driver) for m in plan.members] == [
        ("vfio-pci", "nvidia"), ("vfio-pci", "snd_hda_intel")]


def test_plan_of_the_desktop_gpu_shows_the_soft_guard_that_force_overrides(
        engine: Engine) -> None:
    plan = engine.plan("bind", "0000:05:00.0")
    assert isinstance(plan.refusal, InUse) and not plan.refusal.hard
    assert any(g.kind == "soft" and "Xorg" in g.reason for g in plan.guards)
    forced = engine.plan("bind", "0000:05:00.0", force=True)
    assert forced.refusal is None and forced.guards == plan.guards


def test_plan_of_the_root_disk_controller_shows_the_hard_guard(engine: Engine) -> None:
    plan = engine.plan("bind", "0000:00:1f.2", force=True)
    assert isinstance(plan.refusal, InUse) and plan.refusal.hard
    assert any(g.kind == "hard" and g.address == "0000:00:1f.2" for g in plan.guards)


def test_dry_run_answers_with_the_error_the_real_call_raises(engine: Engine) -> None:
    with pytest.raises(InUse, match="Xorg"):
        engine.plan("bind", "0000:05:00.0").answer()


def test_plan_of_a_reset_lists_the_rungs_best_first(engine: Engine) -> None:
    plan = engine.plan("reset", "0000:00:1b.0", force=True)
    assert plan.rungs == ["flr", "pm"]
    assert plan.answer() == "flr"


def test_plan_of_a_reset_adds_the_hot_reset_once_the_bus_qualifies(engine: Engine) -> None:
    engine.bind("0000:06:00.0")
    # then the remove and rescan of the slot, the ladder's last rung
    assert engine.plan("reset", "0000:06:00.0").rungs == ["bus", HOT_RESET, "remove_rescan"]


def test_plan_of_a_reset_on_vfio_pci_leaves_proc_alone(engine: Engine,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The group fence answers whether a guest holds it; /proc is for a host driver's guards.
    engine.bind("0000:06:00.0")

    def no_scan(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("scanned /proc")

    monkeypatch.setattr(engine.inventory, "scan_holders", no_scan)
    plan = engine.plan("reset", "0000:06:00.0")
    assert plan.refusal is None and plan.rungs[0] == "bus"


def test_unbind_plan_refuses_while_a_guest_holds_the_group(engine: Engine,
                                                           host: SimHost) -> None:
    engine.bind("0000:06:00.0")
    guest = host.spawn_holder(["/dev/vfio/31"])
    try:
        plan = engine.plan("unbind", "0000:06:00.0")
        assert isinstance(plan.refusal, InUse)
        assert f"pid {guest.pid}" in str(plan.refusal)
    finally:
        guest.close()


def test_dry_run_lets_go_of_the_group_it_checked(engine: Engine, host: SimHost) -> None:
    engine.bind("0000:06:00.0")
    engine.plan("unbind", "0000:06:00.0")
    assert engine.unbind("0000:06:00.0") == ["0000:06:00.0", "0000:06:00.1"]


def test_tree_snapshot_sees_a_write(host: SimHost, tmp_path: Path) -> None:
    # The no-write checks above compare trees: a real write must show in one.
    before = tree(host)
    Engine(host, tmp_path / "state").bind("0000:06:00.0")
    assert tree(host) != before
