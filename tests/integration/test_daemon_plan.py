"""Dry runs, Plan and CheckDevices through the running daemon, as busctl calls them."""

from __future__ import annotations

import json

from .helpers import DEVICE_IFACE, Vfiod, device_path, sim_driver

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"
SEED_GUEST = ["0000:11:00.0", "0000:00:1b.0", GPU, AUDIO, "0000:00:11.0", "0000:00:11.4"]


def data(result: object) -> list:
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    return json.loads(result.stdout)["data"]  # type: ignore[attr-defined]


def test_dry_run_bind_answers_what_would_move_and_moves_nothing(vfiod: Vfiod) -> None:
    dry = data(vfiod.call("Bind", "sa{sv}", GPU, "1", "dry_run", "b", "true"))
    assert dry == [[GPU, AUDIO]]
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"
    assert vfiod.status()[GPU]["state"] == "host"
    assert data(vfiod.call("Bind", "sa{sv}", GPU, "0")) == dry


def test_dry_run_bind_of_the_desktop_gpu_answers_the_same_error(vfiod: Vfiod) -> None:
    dry = vfiod.call("Bind", "sa{sv}", "0000:05:00.0", "1", "dry_run", "b", "true")
    real = vfiod.call("Bind", "sa{sv}", "0000:05:00.0", "0")
    assert dry.returncode != 0 and real.returncode != 0
    assert dry.stderr == real.stderr and "Xorg" in dry.stderr
    assert sim_driver(vfiod.sim_root, "0000:05:00.0") == "nvidia"


def test_dry_run_on_the_device_object_answers_as_the_manager(vfiod: Vfiod) -> None:
    result = vfiod.call("Bind", "a{sv}", "1", "dry_run", "b", "true",
                        path=device_path(AUDIO), interface=DEVICE_IFACE)
    assert data(result) == [[GPU, AUDIO]]
    assert sim_driver(vfiod.sim_root, AUDIO) == "snd_hda_intel"


def test_dry_run_unbind_and_reset_answer_as_the_real_calls(vfiod: Vfiod) -> None:
    data(vfiod.call("Bind", "sa{sv}", GPU, "0"))
    dry_unbind = data(vfiod.call("Unbind", "sa{sv}", GPU, "1", "dry_run", "b", "true"))
    assert sim_driver(vfiod.sim_root, GPU) == "vfio-pci"
    dry_reset = data(vfiod.call("Reset", "sa{sv}", "00:1b.0", "2", "dry_run", "b", "true",
                                "force", "b", "true"))
    assert dry_reset == data(vfiod.call("Reset", "sa{sv}", "00:1b.0", "1", "force", "b",
                                        "true"))
    assert dry_unbind == data(vfiod.call("Unbind", "sa{sv}", GPU, "0"))


def test_plan_of_a_bind_lists_members_modules_and_no_error(vfiod: Vfiod) -> None:
    address, members, guards, rungs, modules, error, message = data(
        vfiod.call("Plan", "ssa{sv}", "bind", "06:00.0", "0"))
    assert address == GPU
    assert members == [[GPU, "nvidia", "vfio-pci", ""], [AUDIO, "snd_hda_intel", "vfio-pci", ""]]
    assert (guards, rungs, modules, error, message) == ([], [], ["vfio-pci"], "", "")


def test_plan_of_the_desktop_gpu_names_its_guards_and_the_error(vfiod: Vfiod) -> None:
    _a, _m, guards, _r, _mod, error, message = data(
        vfiod.call("Plan", "ssa{sv}", "bind", "0000:05:00.0", "0"))
    assert error == "org.vfiod1.Error.InUse" and "force" in message
    assert any(kind == "soft" and "Xorg" in why for _addr, kind, why in guards)


def test_plan_of_a_reset_lists_its_rungs(vfiod: Vfiod) -> None:
    reply = data(vfiod.call("Plan", "ssa{sv}", "reset", "00:1b.0", "1", "force", "b", "true"))
    assert reply[3] == ["flr", "pm"]


def test_plan_of_an_unknown_operation_is_an_invalid_argument(vfiod: Vfiod) -> None:
    result = vfiod.call("Plan", "ssa{sv}", "explode", GPU, "0")
    assert result.returncode != 0 and "unknown operation" in result.stderr


def test_check_devices_of_the_write_ups_guest_is_all_ok(vfiod: Vfiod) -> None:
    rows = data(vfiod.call("CheckDevices", "as", str(len(SEED_GUEST)), *SEED_GUEST))[0]
    assert [(d, s) for d, s, _m in rows] == [(a, "ok") for a in SEED_GUEST]


def test_check_devices_names_the_root_disk_controller_as_needed_by_the_host(
        vfiod: Vfiod) -> None:
    rows = data(vfiod.call("CheckDevices", "as", "1", "0000:00:1f.2"))[0]
    assert any(s == "error" and "mounted on /" in m and "fix:" in m for _d, s, m in rows)


def test_plan_and_check_devices_are_refused_to_a_user_without_the_right(vfiod: Vfiod) -> None:
    plan = vfiod.call("Plan", "ssa{sv}", "bind", GPU, "0", user="nobody")
    check = vfiod.call("CheckDevices", "as", "1", GPU, user="nobody")
    assert "Access denied" in plan.stderr or "AccessDenied" in plan.stderr, plan.stderr
    assert "Access denied" in check.stderr or "AccessDenied" in check.stderr, check.stderr


def test_plan_takes_the_options_of_the_call_it_plans_and_ignores_wait_and_clear(
        vfiod: Vfiod) -> None:
    # A Plan of a Bind with wait (or a Reset with clear) plans as the call would: it was
    # a TypeError in Daemon.plan ("internal error").
    plain = data(vfiod.call("Plan", "ssa{sv}", "bind", "06:00.0", "0"))
    assert data(vfiod.call("Plan", "ssa{sv}", "bind", "06:00.0", "1", "wait", "u", "5")) == plain
    reset = data(vfiod.call("Plan", "ssa{sv}", "reset", "00:1b.0", "1", "force", "b", "true"))
    assert data(vfiod.call("Plan", "ssa{sv}", "reset", "00:1b.0", "3", "force", "b", "true",
                           "clear", "b", "true", "wait", "u", "1")) == reset
