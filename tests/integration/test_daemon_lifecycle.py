"""Start, readiness, watchdog, reload, stop, and a restart after being killed mid-bind."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vfiod.privatebus import (
    Notification,
    Notifications,
    PrivateBus,
    PrivateBusError,
    name_has_owner,
    name_owner_pid,
    stop_vfiod,
    vfiod_command,
)

from .helpers import Vfiod, knobs, sim_driver, wait_for

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"
CONFIG = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\n'
BAD_CONFIG = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\nboot = "maybe"\n'
#: Valid on its own; on the machine the GPU and its audio share IOMMU group 31.
CONFLICTING_BOOT = ('[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\nboot = "vfio"\n\n'
                    '[[device]]\nmatch = "0000:06:00.1"\nboot = "host"\n')


def notifications(daemon: Vfiod) -> Notifications:
    """What the daemon sent to its NOTIFY_SOCKET (the harness's, as systemd's would be)."""
    assert daemon.proc is not None
    return daemon.proc.notifications


def with_line(line: str) -> Callable[[list[Notification]], list[Notification]]:
    """A predicate over notifications: those that carry *line*."""
    return lambda got: [n for n in got if line in n.lines]


def drivers(root: Path) -> dict[str, str]:
    """Every function's driver in the simulated tree."""
    return {a: sim_driver(root, a) for a in os.listdir(root / "sys/bus/pci/devices")}


def test_ready_is_sent_once_the_name_is_owned_with_a_status_line(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod().start()
    [ready] = with_line("READY=1")(notifications(daemon).received)
    assert "STATUS=0 devices on vfio-pci, 0 in a guest" in ready.lines
    assert name_has_owner(daemon.address)


def test_status_line_follows_a_bind(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod().start()
    assert daemon.call("Bind", "sa{sv}", GPU, "0").returncode == 0
    assert notifications(daemon).wait(
        with_line("STATUS=2 devices on vfio-pci, 0 in a guest"), timeout=10)


def test_watchdog_is_pinged_every_half_interval(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod().start(WATCHDOG_USEC="200000")
    notes = notifications(daemon)
    [ready] = with_line("READY=1")(notes.received)

    def three_pings(got: list[Notification]) -> list[Notification]:
        pings = with_line("WATCHDOG=1")(got)
        return pings if len(pings) >= 3 else []

    pings = notes.wait(three_pings, timeout=5)
    assert pings, [n.text for n in notes.received]
    # Three pings 0.1 s apart (the first may be immediate): well under a second.
    assert pings[2].at - ready.at < 1.0


def test_missing_notify_socket_does_not_stop_the_daemon(
        private_bus: PrivateBus, tmp_path: Path) -> None:
    # Not through start_vfiod, which gives vfiod a socket of its own to wait on.
    env = {**private_bus.env(), "NOTIFY_SOCKET": str(tmp_path / "absent")}
    (tmp_path / "empty.toml").write_text("")
    command = vfiod_command(private_bus, tmp_path / "sim", "seed-x99", tmp_path / "state",
                            tmp_path / "empty.toml")
    with open(tmp_path / "vfiod.log", "wb") as log:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: name_owner_pid(private_bus.address) == proc.pid
                 or proc.poll() is not None, 30, "vfiod owning its name")
        assert proc.poll() is None, (tmp_path / "vfiod.log").read_text()
        wait_for(lambda: "cannot notify the service manager"
                 in (tmp_path / "vfiod.log").read_text(), what="the warning")
        status = subprocess.run(["busctl", f"--address={private_bus.address}", "call",
                                 "org.vfiod1", "/org/vfiod1", "org.vfiod1.Manager", "Status"],
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and '"0000:06:00.0"' in status.stdout, status.stderr
        assert proc.poll() is None
    finally:
        assert stop_vfiod(proc) == 0


def test_sighup_with_a_bad_config_keeps_the_old_one_and_logs_file_and_line(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    assert daemon.config is not None and daemon.proc is not None
    daemon.config.write_text(BAD_CONFIG)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f"{daemon.config}:4: device[0].boot" in daemon.log(), what="the log line")
    assert "keeping the running one" in daemon.log()
    # The old config still names the GPU.
    result = daemon.call("Bind", "sa{sv}", "gpu", "0")
    assert result.returncode == 0, result.stderr
    assert daemon.proc.poll() is None


def test_reload_with_a_bad_config_is_invalid_argument_naming_file_and_line(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    assert daemon.config is not None
    daemon.config.write_text(BAD_CONFIG)
    result = daemon.call("Reload")
    assert result.returncode != 0
    assert f"{daemon.config}:4: device[0].boot" in result.stderr


def test_reload_of_a_config_nested_3000_deep_is_invalid_argument_and_keeps_the_old_one(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    assert daemon.config is not None and daemon.proc is not None
    daemon.config.write_text(CONFIG + "x = " + "[" * 3000 + "]" * 3000 + "\n")
    result = daemon.call("Reload")
    assert result.returncode != 0
    assert "org.vfiod1.Error.InvalidArgument" in result.stderr or "nested" in result.stderr
    assert f"{daemon.config}:4: arrays or inline tables nested" in result.stderr
    assert "internal error" not in result.stderr
    assert "RecursionError" not in daemon.log()
    assert daemon.get_property(GPU, "ConfigName") == "gpu"


def test_reload_of_a_fifo_config_is_refused_at_once(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    assert daemon.config is not None
    daemon.config.unlink()
    os.mkfifo(daemon.config)
    result = daemon.call("Reload")
    assert result.returncode != 0
    assert f"{daemon.config}: is a FIFO, not a regular file" in result.stderr
    assert daemon.get_property(GPU, "ConfigName") == "gpu"


def test_reload_with_boot_values_conflicting_in_a_group_keeps_the_old_config(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    assert daemon.config is not None
    daemon.config.write_text(CONFLICTING_BOOT.replace('"gpu"', '"new-gpu"'))
    result = daemon.call("Reload")
    assert result.returncode != 0
    assert f"{daemon.config}:8: device[1].boot" in result.stderr
    assert daemon.get_property(GPU, "ConfigName") == "gpu"  # the old config stays


def test_boot_values_conflicting_in_a_group_at_start_are_refused_with_file_and_line(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFLICTING_BOOT)
    with pytest.raises(PrivateBusError, match="exited with status 1"):
        daemon.start()
    log = daemon.log()
    assert f"cannot start: {daemon.config}:8: device[1].boot" in log
    assert "IOMMU group 31" in log and "Traceback" not in log


def test_reload_takes_a_new_name_into_use(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    assert daemon.config is not None
    assert daemon.get_property(GPU, "ConfigName") == "gpu"
    daemon.config.write_text(CONFIG.replace('"gpu"', '"guest-gpu"'))
    assert daemon.call("Reload").returncode == 0
    assert daemon.get_property(GPU, "ConfigName") == "guest-gpu"
    result = daemon.call("Bind", "sa{sv}", "guest-gpu", "0")
    assert result.returncode == 0, result.stderr
    assert sim_driver(daemon.sim_root, GPU) == "vfio-pci"


def test_sigterm_releases_the_name_and_exits_0(vfiod: Vfiod) -> None:
    assert vfiod.stop() == 0
    assert not name_has_owner(vfiod.address)
    assert "stopped" in vfiod.log()


def test_second_daemon_on_the_same_bus_refuses_to_start(
        vfiod: Vfiod, make_vfiod: Callable[..., Vfiod]) -> None:
    with pytest.raises(PrivateBusError, match="exited with status 1"):
        make_vfiod().start()
    assert vfiod.status()[GPU]["driver"] == "nvidia"  # the first one is unharmed


def test_bad_config_at_start_is_refused_with_file_and_line(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=BAD_CONFIG)
    with pytest.raises(PrivateBusError):
        daemon.start()
    assert f"{daemon.config}:4: device[0].boot" in daemon.log()


def test_a_config_nested_3000_deep_at_start_is_one_line_not_a_traceback(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config="x = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(PrivateBusError):
        daemon.start()
    assert f"{daemon.config}:1: arrays or inline tables nested" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_sigkill_mid_bind_then_restart_puts_every_device_back_on_a_driver_it_had(
        make_vfiod: Callable[..., Vfiod]) -> None:
    # Every drivers_probe takes 30 s: the daemon is killed in the first (the GPU's).
    daemon = make_vfiod(**knobs(delay=[{"path": "/sys/bus/pci/drivers_probe",
                                        "seconds": 30}])).start()
    before = drivers(daemon.sim_root)
    bind = subprocess.Popen(["busctl", f"--address={daemon.address}", "call", "org.vfiod1",
                             "/org/vfiod1", "org.vfiod1.Manager", "Bind", "sa{sv}", GPU, "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Under way: the transaction is journalled and the GPU has left nvidia.
        wait_for(lambda: list(daemon.state_dir.glob("txn-*.json"))
                 and sim_driver(daemon.sim_root, GPU) == "", what="the bind under way")
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait()
    finally:
        bind.wait(30)
    mid = drivers(daemon.sim_root)
    assert mid[GPU] != before[GPU]  # it really was killed half-way
    daemon.env.clear()
    daemon.start()
    after = drivers(daemon.sim_root)
    assert after == before
    assert not list(daemon.state_dir.glob("txn-*.json"))
    status = daemon.status()
    assert {a: status[a]["driver"] for a in after} == after
    assert "recovered 2 device(s)" in daemon.log()


@pytest.mark.parametrize("step", [0, 2, 3, 5])
def test_simulated_crash_after_each_step_of_a_bind_is_recovered_at_restart(
        make_vfiod: Callable[..., Vfiod], step: int) -> None:
    daemon = make_vfiod(**knobs(crash_after=step)).start()
    before = drivers(daemon.sim_root)
    result = daemon.call("Bind", "sa{sv}", GPU, "0")
    assert result.returncode != 0  # the daemon died mid-call
    assert daemon.proc is not None and daemon.proc.wait(10) == 128 + signal.SIGKILL
    daemon.env.clear()
    daemon.start()
    assert drivers(daemon.sim_root) == before
    assert not list(daemon.state_dir.glob("txn-*.json"))


def test_unreachable_bus_is_one_clear_line_and_status_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vfiod.daemon.main", "--simulate", "seed-x99",
         "--sim-root", str(tmp_path / "sim"), "--state-dir", str(tmp_path / "state"),
         "--config", str(tmp_path / "absent.toml"),
         "--address", f"unix:path={tmp_path}/no-bus-here"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot start: cannot connect to D-Bus" in result.stderr
    assert "Traceback" not in result.stderr


def test_sim_root_without_simulate_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "vfiod.daemon.main", "--sim-root",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--sim-root needs --simulate" in result.stderr


def test_sigterm_during_a_bind_lets_it_finish_then_exits_0(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(delay=[{"path": "/sys/bus/pci/drivers_probe",
                                        "seconds": 1, "times": 1}])).start()
    bind = subprocess.Popen(["busctl", f"--address={daemon.address}", "call", "org.vfiod1",
                             "/org/vfiod1", "org.vfiod1.Manager", "Bind", "sa{sv}", GPU, "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sim_driver(daemon.sim_root, GPU) == "", what="the bind under way")
        assert daemon.stop() == 0
        out, err = bind.communicate(timeout=30)
    finally:
        if bind.poll() is None:
            bind.kill()
            bind.wait()
    assert bind.returncode == 0, err
    assert out.split() == ["as", "2", f'"{GPU}"', f'"{AUDIO}"']
    assert sim_driver(daemon.sim_root, GPU) == sim_driver(daemon.sim_root, AUDIO) == "vfio-pci"
    assert not list(daemon.state_dir.glob("txn-*.json"))


def test_a_damaged_journal_at_start_is_set_aside_and_said(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod()
    daemon.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (daemon.state_dir / f"txn-{GPU}.json").write_text("{ torn")
    daemon.start()
    log = daemon.log()
    assert f"txn-{GPU}.json is damaged" in log
    assert "1 file(s) of the state directory set aside or discarded at start" in log
    assert len(list(daemon.state_dir.glob(f"txn-{GPU}.json.damaged-*"))) == 1
    assert daemon.status()[GPU]["driver"] == "nvidia"


def test_a_state_directory_others_can_write_is_refused_at_start(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod()
    daemon.state_dir.mkdir(parents=True, exist_ok=True)
    daemon.state_dir.chmod(0o777)
    with pytest.raises(PrivateBusError, match="exited with status 1"):
        daemon.start()
    assert "is writable by others (mode 0777)" in daemon.log()


def _unit_reload_command() -> list[str]:
    """The unit's ExecReload line, as systemctl reload runs it."""
    unit = Path(__file__).resolve().parents[2] / "systemd" / "vfiod.service"
    lines = [line for line in unit.read_text().splitlines() if line.startswith("ExecReload=")]
    assert len(lines) == 1
    return shlex.split(lines[0].removeprefix("ExecReload="))


def test_unit_reload_command_fails_naming_file_and_line_when_the_config_is_refused(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    assert daemon.config is not None
    daemon.config.write_text(BAD_CONFIG)
    result = subprocess.run(_unit_reload_command(), env=daemon.bus.env(), capture_output=True,
                            text=True, timeout=90)
    assert result.returncode != 0
    assert f"{daemon.config}:4: device[0].boot" in result.stderr
    assert daemon.get_property(GPU, "ConfigName") == "gpu"


def test_unit_reload_command_succeeds_and_applies_a_good_config(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=CONFIG).start()
    assert daemon.config is not None
    daemon.config.write_text(CONFIG.replace('"gpu"', '"guest-gpu"'))
    result = subprocess.run(_unit_reload_command(), env=daemon.bus.env(), capture_output=True,
                            text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert daemon.get_property(GPU, "ConfigName") == "guest-gpu"
