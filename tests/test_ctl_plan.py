"""How vfioctl shows a dry run's plan and a domain check (pure formatting)."""

from __future__ import annotations

import argparse

from vfiod.ctl.domain import Domain, check_lines, check_rows
from vfiod.ctl.dryrun import ShownPlan, plan_lines, plan_options

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"


def reply(members: list[list[str]], guards: list[list[str]] = [], rungs: list[str] = [],
          modules: list[str] = [], error: str = "", message: str = "") -> list[object]:
    return [GPU, members, guards, rungs, modules, error, message]


def test_members_that_stay_say_why() -> None:
    plan = ShownPlan.from_reply("bind", reply([[GPU, "vfio-pci", "vfio-pci",
                                                "already on vfio-pci"]]))
    assert plan_lines(plan)[1:] == [f"  {GPU}  vfio-pci: already on vfio-pci",
                                    "  would move nothing"]


def test_a_refused_plan_shows_its_guard_and_the_refusal() -> None:
    plan = ShownPlan.from_reply("bind", reply(
        [[GPU, "nvidia", "vfio-pci", ""]],
        guards=[[GPU, "soft", "/dev/dri/card0 is held open by Xorg (pid 7)"]],
        error="org.vfiod1.Error.InUse", message="refusing (use force to override)"))
    lines = plan_lines(plan)
    assert "  guard (soft, refuses unless --force): " \
           f"{GPU}: /dev/dri/card0 is held open by Xorg (pid 7)" in lines
    assert lines[-1] == "  would refuse: refusing (use force to override)"


def test_a_reset_plan_names_the_hot_reset_rung() -> None:
    plan = ShownPlan.from_reply("reset", reply([[GPU, "vfio-pci", "vfio-pci",
                                                 "reset in place"]],
                                               rungs=["bus", "hot_reset"]))
    lines = plan_lines(plan)
    assert "  would try, in order: bus, hot_reset (VFIO's hot reset of the bus)" in lines
    assert lines[-1] == "  would reset it, trying bus first"


def test_text_from_the_machine_is_escaped() -> None:
    plan = ShownPlan.from_reply("bind", reply([[GPU, "nvidia", "vfio-pci", ""]], guards=[
        [GPU, "soft", "held by \x1b[2Jevil (pid 1)"]], error="org.vfiod1.Error.InUse",
        message="m"))
    assert not any("\x1b" in line for line in plan_lines(plan))


def test_dry_run_sends_the_real_calls_options() -> None:
    args = argparse.Namespace(command="bind", no_group=True, force=True)
    assert plan_options(args) == {"group": False, "force": True}
    args = argparse.Namespace(command="reset", force=False)
    assert plan_options(args) == {}
    args = argparse.Namespace(command="reset", force=True, clear=True, wait=5)
    assert plan_options(args) == {"force": True}


def test_an_unreadable_hostdev_is_an_error_with_its_fix() -> None:
    rows = check_rows(Domain([GPU], ["<hostdev> #2: its address has no bus"]),
                      [(GPU, "ok", f"{GPU}: ready")])
    assert rows[0][1] == "error" and "fix: give it a full <address" in rows[0][2]
    assert rows[1] == (GPU, "ok", f"{GPU}: ready")


def test_check_lines_end_with_the_verdict() -> None:
    assert check_lines([(GPU, "ok", "ready"), (AUDIO, "warning", "w")])[-1] == \
        "ready: every device can go to the guest (1 warning(s))"
    assert check_lines([(GPU, "error", "e")])[-1].startswith("1 error(s), 0 warning(s)")
    assert check_lines([]) == ["the domain has no PCI host device: nothing to check"]
