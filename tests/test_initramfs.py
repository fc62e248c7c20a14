"""The early-boot shim: rendered from the config and the simulated seed-x99 host, then
run with sh against the simulated machine (VFIOD_SHIM_ROOT) and a recording modprobe."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vfiod.config import Config, parse_config
from vfiod.discovery import scan
from vfiod.initramfs import (INTEGRATIONS, SHIM_PATH, ShimError, detect_tool, install_shim,
                             plan_shim, render_shim, shim_is_current, template_dir)
from vfiod.model import PciDevice
from vfiod.sim import SimHost

REPO = Path(__file__).resolve().parent.parent
INITRAMFS = REPO / "initramfs"

GPU = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\nboot = "vfio"\n'
USB = '[[device]]\nmatch = "1b21:1242@0000:11:00.0"\nname = "usb"\nboot = "vfio"\n'

SH_SCRIPTS = [
    "initramfs-tools/hooks/vfiod", "initramfs-tools/scripts/init-top/00-vfiod",
    "dracut/90vfiod/vfiod-pre-udev.sh", "mkinitcpio/hooks/vfiod",
]
BASH_SCRIPTS = ["dracut/90vfiod/module-setup.sh", "mkinitcpio/install/vfiod"]


def config(*tables: str) -> Config:
    return parse_config("\n".join(tables), "/etc/vfiod/vfiod.toml")


class ShimRun:
    """One run of a rendered shim against a simulated machine."""

    def __init__(self, proc: subprocess.CompletedProcess[str], modprobe_log: Path) -> None:
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        self.modprobe_calls = (modprobe_log.read_text().splitlines()
                               if modprobe_log.exists() else [])


def run_shim(text: str, host: SimHost, tmp_path: Path, cmdline: str | None = None) -> ShimRun:
    """Run the shim with sh; VFIOD_SHIM_ROOT is always the simulated machine's root."""
    assert host.simulated and str(host.root) not in ("", "/")
    script = tmp_path / "early-boot.sh"
    script.write_text(text)
    log = tmp_path / "modprobe.log"
    fake = tmp_path / "modprobe"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    if cmdline is not None:
        (host.root / "proc" / "cmdline").write_text(cmdline + "\n")
    env = {"PATH": os.environ["PATH"], "VFIOD_SHIM_ROOT": str(host.root),
           "MODPROBE": str(fake)}
    proc = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True,
                          timeout=60)
    # The simulated kernel applies direct writes from an inotify watcher: its barrier
    # returns once every write the shim made has been applied (or refused).
    assert host.sync_external(), "the simulated kernel did not apply the shim's writes"
    return ShimRun(proc, log)


def override(host: SimHost, address: str) -> str | None:
    value = host.read_text(f"/sys/bus/pci/devices/{address}/driver_override")
    return None if value in (None, "(null)", "") else value


def driver(host: SimHost, address: str) -> str | None:
    return host.link_name(f"/sys/bus/pci/devices/{address}/driver")


def with_ids(devices: dict[str, PciDevice], address: str, vendor: int,
             device: int) -> dict[str, PciDevice]:
    """The device list as it was when a different card sat at *address*."""
    return {**devices, address: dataclasses.replace(devices[address], vendor=vendor,
                                                    device=device)}


# -- the templates -----------------------------------------------------------------------

def test_shim_template_and_sh_integrations_parse_with_sh_n() -> None:
    for name in ["vfiod-shim.sh.in", *SH_SCRIPTS]:
        proc = subprocess.run(["sh", "-n", str(INITRAMFS / name)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
    for name in BASH_SCRIPTS:
        proc = subprocess.run(["bash", "-n", str(INITRAMFS / name)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_templates_pass_shellcheck() -> None:
    names = ["vfiod-shim.sh.in", *SH_SCRIPTS, *BASH_SCRIPTS]
    proc = subprocess.run(["shellcheck", "--severity=info", *names], cwd=INITRAMFS,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout


def test_integration_files_are_executable_where_tools_execute_them() -> None:
    for name in [*SH_SCRIPTS[:3], "dracut/90vfiod/module-setup.sh"]:
        assert os.access(INITRAMFS / name, os.X_OK), name


def test_init_top_script_sorts_before_udev() -> None:
    # mkinitramfs orders a stage's scripts without prerequisites by name (tsort).
    proc = subprocess.run(["tsort"], input="udev udev\n00-vfiod 00-vfiod\nkeymap keymap\n",
                          capture_output=True, text=True)
    order = proc.stdout.split()
    assert order.index("00-vfiod") < order.index("udev")
    assert (INITRAMFS / "initramfs-tools/scripts/init-top/00-vfiod").exists()


# -- rendering ---------------------------------------------------------------------------

def test_render_is_valid_sh_and_passes_shellcheck(seed: SimHost) -> None:
    text = render_shim(config(GPU, USB), scan(seed))
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-s", "sh", "-"], input=text,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_render_is_deterministic(seed: SimHost) -> None:
    devices = scan(seed)
    assert render_shim(config(GPU), devices) == render_shim(config(GPU), devices)


def test_plan_takes_the_whole_iommu_group_but_no_bridge(seed: SimHost) -> None:
    devices = scan(seed)
    planned = plan_shim(config(GPU), devices)
    group = devices["0000:06:00.0"].iommu_group
    endpoints = sorted(d.address for d in devices.values()
                       if d.iommu_group == group and d.is_endpoint)
    assert [p.address for p in planned] == endpoints
    assert "0000:06:00.1" in endpoints
    assert all(not devices[p.address].is_bridge for p in planned)
    assert {p.why for p in planned} == {"gpu", f"IOMMU group {group} of gpu"}


def test_render_refuses_an_ids_match_that_names_three_gpus(seed: SimHost) -> None:
    with pytest.raises(ShimError) as info:
        render_shim(config('[[device]]\nmatch = "10de:1b06"\nboot = "vfio"\n'), scan(seed))
    message = str(info.value)
    assert "3 devices have ids 10de:1b06" in message
    assert 'match = "10de:1b06@0000:05:00.0"' in message


def test_render_refuses_an_address_holding_other_ids(seed: SimHost) -> None:
    with pytest.raises(ShimError) as info:
        render_shim(config('[[device]]\nmatch = "1002:67df@06:00.0"\nboot = "vfio"\n'),
                    scan(seed))
    assert "0000:06:00.0 is 10de:1b06" in str(info.value)


def test_render_refuses_an_absent_address(seed: SimHost) -> None:
    with pytest.raises(ShimError, match="no PCI device at 0000:42:00.0"):
        render_shim(config('[[device]]\nmatch = "42:00.0"\nboot = "vfio"\n'), scan(seed))


def test_render_refuses_boot_host_on_a_member_of_a_claimed_group(seed: SimHost) -> None:
    audio_home = '[[device]]\nmatch = "0000:06:00.1"\nboot = "host"\n'
    with pytest.raises(ShimError) as info:
        render_shim(config(GPU, audio_home), scan(seed))
    assert str(info.value).startswith(
        '/etc/vfiod/vfiod.toml:8: device[1].boot: "host" for 0000:06:00.1 conflicts')


def test_entries_with_boot_host_are_not_in_the_shim(seed: SimHost) -> None:
    cfg = config('[[device]]\nmatch = "06:00.0"\n')
    assert plan_shim(cfg, scan(seed)) == []
    assert "0000:06:00.0" not in render_shim(cfg, scan(seed)).split("LISTED=")[1].split("\n")[0]


# -- running the shim against the simulated machine ------------------------------------

def test_shim_claims_the_gpu_and_its_audio_and_loads_vfio_pci(sim: SimHost,
                                                              tmp_path: Path) -> None:
    run = run_shim(render_shim(config(GPU), scan(sim)), sim, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.modprobe_calls == ["vfio-pci"]
    for address in ("0000:06:00.0", "0000:06:00.1"):
        assert override(sim, address) == "vfio-pci", address
        assert driver(sim, address) is None, address
    assert "claimed for vfio-pci: 0000:06:00.0 0000:06:00.1" in run.stderr


def test_claimed_devices_bind_to_vfio_pci_when_it_loads(sim: SimHost, tmp_path: Path) -> None:
    run_shim(render_shim(config(GPU), scan(sim)), sim, tmp_path)
    assert driver(sim, "0000:06:00.1") is None
    sim.load_module("vfio-pci")  # what the recorded `modprobe vfio-pci` does on a real boot
    assert driver(sim, "0000:06:00.0") == "vfio-pci"
    assert driver(sim, "0000:06:00.1") == "vfio-pci"


def test_shim_leaves_other_devices_alone(sim: SimHost, tmp_path: Path) -> None:
    before = {a: (driver(sim, a), override(sim, a)) for a in scan(sim)}
    run_shim(render_shim(config(GPU), scan(sim)), sim, tmp_path)
    assert driver(sim, "0000:06:00.1") is None
    after = {a: (driver(sim, a), override(sim, a)) for a in scan(sim)}
    changed = sorted(a for a in before if before[a] != after[a])
    assert changed == ["0000:06:00.0", "0000:06:00.1"]


def test_a_card_that_moved_is_not_claimed_and_the_shim_warns(sim: SimHost,
                                                             tmp_path: Path) -> None:
    # Rendered when a GTX 1070 (10de:1b81) sat at 06:00.0; a 1080 Ti is there now.
    devices = with_ids(scan(sim), "0000:06:00.0", 0x10DE, 0x1B81)
    run = run_shim(render_shim(config(GPU), devices), sim, tmp_path)
    assert run.returncode == 1
    assert ("0000:06:00.0 (gpu): found 10de:1b06 where the config expects 10de:1b81"
            in run.stderr)
    assert "not claimed" in run.stderr
    assert run.modprobe_calls == []
    assert override(sim, "0000:06:00.0") is None and override(sim, "0000:06:00.1") is None
    assert driver(sim, "0000:06:00.0") == "nvidia"


def test_a_mismatch_skips_only_that_group(sim: SimHost, tmp_path: Path) -> None:
    devices = with_ids(scan(sim), "0000:11:00.0", 0x1B21, 0x2142)
    text = render_shim(config(GPU, '[[device]]\nmatch = "0000:11:00.0"\nboot = "vfio"\n'),
                       devices)
    run = run_shim(text, sim, tmp_path)
    assert run.returncode == 1
    assert "0000:11:00.0" in run.stderr and "expects 1b21:2142" in run.stderr
    assert override(sim, "0000:06:00.0") == "vfio-pci"
    assert override(sim, "0000:11:00.0") is None
    assert driver(sim, "0000:11:00.0") == "xhci_hcd"
    assert run.modprobe_calls == ["vfio-pci"]


def test_a_group_holding_an_unexpected_endpoint_is_left_to_the_host(
        sim: SimHost, tmp_path: Path) -> None:
    # Rendered when 06:00.1 did not share the GPU's group (before an ACS change).
    devices = scan(sim)
    devices["0000:06:00.1"] = dataclasses.replace(devices["0000:06:00.1"], iommu_group=999)
    run = run_shim(render_shim(config(GPU), devices), sim, tmp_path)
    assert run.returncode == 1
    assert "its IOMMU group also holds 0000:06:00.1" in run.stderr
    assert override(sim, "0000:06:00.0") is None
    assert driver(sim, "0000:06:00.0") == "nvidia"


def test_with_the_iommu_off_the_shim_does_nothing_and_says_so(noiommu: SimHost,
                                                              tmp_path: Path) -> None:
    # Rendered while the IOMMU was on; booted with it off.
    on = SimHost(profile="seed-x99", root=tmp_path / "other")
    try:
        text = render_shim(config(GPU), scan(on))
    finally:
        on.close()
    run = run_shim(text, noiommu, tmp_path)
    assert run.returncode == 0
    assert "the IOMMU is off" in run.stderr and "intel_iommu=on" in run.stderr
    assert run.modprobe_calls == []
    assert override(noiommu, "0000:06:00.0") is None
    assert driver(noiommu, "0000:06:00.0") == "nvidia"


def test_vfiod_shim_off_on_the_kernel_command_line_skips_it(sim: SimHost,
                                                            tmp_path: Path) -> None:
    run = run_shim(render_shim(config(GPU), scan(sim)), sim, tmp_path,
                   cmdline="root=/dev/sda2 intel_iommu=on vfiod.shim=off")
    assert run.returncode == 0
    assert "disabled by vfiod.shim=" in run.stderr
    assert run.modprobe_calls == []
    assert override(sim, "0000:06:00.0") is None


# -- installing --------------------------------------------------------------------------

def tool_root(tmp_path: Path, marker: str) -> Path:
    root = tmp_path / "target"
    (root / marker.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / marker.lstrip("/")).write_text("")
    return root


@pytest.mark.parametrize("tool,marker", [
    ("initramfs-tools", "/usr/sbin/update-initramfs"),
    ("dracut", "/usr/bin/dracut"),
    ("mkinitcpio", "/etc/mkinitcpio.conf"),
])
def test_detect_tool_finds_the_installed_initramfs_tool(tmp_path: Path, tool: str,
                                                        marker: str) -> None:
    assert detect_tool(tool_root(tmp_path, marker)) == tool


def test_detect_tool_finds_nothing_on_an_empty_root(tmp_path: Path) -> None:
    assert detect_tool(tmp_path) is None


@pytest.mark.parametrize("tool", sorted(INTEGRATIONS))
def test_install_writes_the_shim_and_the_tools_integration(seed: SimHost, tmp_path: Path,
                                                           tool: str) -> None:
    root = tmp_path / "target"
    result = install_shim(config(GPU), seed, root=root, tool=tool)
    shim = root / SHIM_PATH.lstrip("/")
    assert result.shim == shim
    assert shim.read_text() == render_shim(config(GPU), scan(seed))
    assert os.access(shim, os.X_OK)
    for name, dest in INTEGRATIONS[tool]:
        assert (root / dest.lstrip("/")).read_text() == (INITRAMFS / name).read_text()
    assert [d.address for d in result.claimed] == ["0000:06:00.0", "0000:06:00.1"]
    assert result.next_steps[-1] in ("update-initramfs -u -k all",
                                     "dracut --regenerate-all --force", "mkinitcpio -P")


def test_install_tells_mkinitcpio_users_to_add_the_hook_until_they_do(
        seed: SimHost, tmp_path: Path) -> None:
    root = tool_root(tmp_path, "/etc/mkinitcpio.conf")
    conf = root / "etc/mkinitcpio.conf"
    conf.write_text("HOOKS=(base udev autodetect modconf block filesystems fsck)\n")
    first = install_shim(config(GPU), seed, root=root)
    assert any('add "vfiod" to HOOKS' in step for step in first.next_steps)
    conf.write_text("HOOKS=(base vfiod udev autodetect modconf block filesystems fsck)\n")
    second = install_shim(config(GPU), seed, root=root)
    assert second.next_steps == ["mkinitcpio -P"]


def test_install_without_boot_entries_removes_an_old_shim(seed: SimHost, tmp_path: Path) -> None:
    root = tmp_path / "target"
    install_shim(config(GPU), seed, root=root, tool="dracut")
    result = install_shim(config('[[device]]\nmatch = "06:00.0"\n'), seed, root=root,
                          tool="dracut")
    assert result.shim is None
    assert result.removed == [root / SHIM_PATH.lstrip("/")]
    assert not (root / SHIM_PATH.lstrip("/")).exists()


def test_install_refuses_to_claim_the_root_disk_controller_at_boot(seed: SimHost,
                                                                   tmp_path: Path) -> None:
    root = tmp_path / "target"
    with pytest.raises(ShimError) as info:
        install_shim(config('[[device]]\nmatch = "00:1f.3"\nboot = "vfio"\n'), seed,
                     root=root, tool="initramfs-tools")
    assert "refusing to claim 0000:00:1f.2 at boot" in str(info.value)
    assert "mounted on /" in str(info.value)
    assert not (root / SHIM_PATH.lstrip("/")).exists()


def test_install_without_a_detectable_tool_says_what_to_do(seed: SimHost,
                                                           tmp_path: Path) -> None:
    with pytest.raises(ShimError, match="no initramfs tool found"):
        install_shim(config(GPU), seed, root=tmp_path / "empty")


def test_shim_is_current_until_the_config_changes(sim: SimHost) -> None:
    devices = scan(sim)
    assert shim_is_current(config(GPU), sim, devices) is None
    install_shim(config(GPU), sim, root=sim.root, tool="initramfs-tools")
    assert shim_is_current(config(GPU), sim, devices) is True
    assert shim_is_current(config(GPU, USB), sim, devices) is False


def test_template_is_found_in_the_source_tree() -> None:
    assert template_dir() == INITRAMFS
