"""`vfioctl doctor`'s checks against the simulated seed-x99 workstation."""

from __future__ import annotations

import dataclasses


from vfiod.config import Config, parse_config
from vfiod.doctor import Check, _Facts, check_vendor_reset, run_checks, worst
from vfiod.initramfs import install_shim
from vfiod.sim import SimHost

from initramfs_images import write_image

GPU = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\nboot = "vfio"\n'


def config(*tables: str) -> Config:
    return parse_config("\n".join(tables), "/etc/vfiod/vfiod.toml")


def by_id(checks: list[Check]) -> dict[str, Check]:
    found: dict[str, Check] = {}
    for c in checks:
        assert c.id not in found, f"two checks named {c.id}"
        found[c.id] = c
    return found


def test_every_problem_comes_with_a_short_fix(seed: SimHost) -> None:
    bad = config('[[device]]\nmatch = "00:1f.3"\nboot = "vfio"\n',
                 '[[device]]\nmatch = "05:00.0"\nname = "desk"\n',
                 '[[device]]\nmatch = "42:00.0"\n')
    checks = run_checks(seed, bad)
    problems = [c for c in checks if c.status != "ok"]
    assert len(problems) >= 4
    for c in problems:
        assert c.fix, c.id
        assert len(c.fix) <= 200 and c.fix.count("\n") <= 1, c.fix


def test_iommu_is_on_for_seed_x99(seed: SimHost) -> None:
    checks = by_id(run_checks(seed, None))
    assert checks["iommu"].status == "ok"
    assert "dmar0" in checks["iommu"].summary


def test_iommu_off_fails_and_says_how_to_turn_it_on(noiommu: SimHost) -> None:
    checks = by_id(run_checks(noiommu, None))
    assert checks["iommu"].status == "fail"
    assert "no IOMMU groups" in checks["iommu"].summary
    assert "VT-d" in checks["iommu"].fix and "intel_iommu=on" in checks["iommu"].fix
    assert checks["cmdline"].status == "fail"
    assert worst(checks.values()) == "fail"


def test_on_an_amd_cpu_the_fix_is_the_firmware_switch(noiommu: SimHost) -> None:
    (noiommu.root / "proc/cpuinfo").write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n")
    checks = by_id(run_checks(noiommu, None))
    assert "AMD-Vi" in checks["iommu"].fix
    assert "intel_iommu" not in checks["iommu"].fix + checks["cmdline"].fix


def test_cmdline_ok_mentions_iommu_pt_when_it_is_missing(seed: SimHost) -> None:
    cmdline = by_id(run_checks(seed, None))["cmdline"]
    assert cmdline.status == "ok"
    assert "intel_iommu=on" in cmdline.summary and "iommu=pt" in cmdline.summary


def test_cmdline_turning_the_iommu_off_fails(sim: SimHost) -> None:
    (sim.root / "proc/cmdline").write_text("ro intel_iommu=off quiet\n")
    cmdline = by_id(run_checks(sim, None))["cmdline"]
    assert cmdline.status == "fail"
    assert "remove intel_iommu=off" in cmdline.fix


def test_vfio_pci_not_loaded_yet_is_fine(seed: SimHost) -> None:
    assert by_id(run_checks(seed, None))["vfio_module"].status == "ok"


def test_vfio_pci_ids_claiming_every_gtx_1080_ti_is_flagged(sim: SimHost) -> None:
    (sim.root / "proc/cmdline").write_text("ro intel_iommu=on vfio-pci.ids=10de:1b06\n")
    check = by_id(run_checks(sim, config(GPU)))["vfio_ids"]
    assert check.status == "warn"
    assert "claims all 3 devices 10de:1b06" in check.summary
    assert "0000:05:00.0" in check.summary


def test_modprobe_d_vfio_ids_are_found_too(sim: SimHost) -> None:
    conf = sim.root / "etc/modprobe.d/vfio.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("options vfio-pci ids=10de:1b06,10de:10ef disable_vga=1\n")
    check = by_id(run_checks(sim, config(GPU)))["vfio_ids"]
    assert check.status == "warn"
    assert "/etc/modprobe.d/vfio.conf" in check.summary


def test_no_config_skips_device_checks(seed: SimHost) -> None:
    ids = [c.id for c in run_checks(seed, None)]
    assert not [i for i in ids if i.startswith(("device:", "group:"))]
    assert "config" in ids and "shim" in ids


def test_a_present_device_is_ok_and_named(seed: SimHost) -> None:
    check = by_id(run_checks(seed, config(GPU)))["device:gpu"]
    assert check.status == "ok"
    assert "0000:06:00.0" in check.summary and "nvidia" in check.summary


def test_a_card_that_is_not_at_its_address_fails(seed: SimHost) -> None:
    checks = by_id(run_checks(seed, config(
        '[[device]]\nmatch = "1002:67df@06:00.0"\nname = "rx580"\n')))
    check = checks["device:rx580"]
    assert check.status == "fail"
    assert "0000:06:00.0 is 10de:1b06" in check.summary
    assert "update match" in check.fix


def test_an_absent_address_fails(seed: SimHost) -> None:
    check = by_id(run_checks(seed, config('[[device]]\nmatch = "42:00.0"\n')))
    assert check["device:0000:42:00.0"].status == "fail"


def test_an_ambiguous_ids_match_with_boot_vfio_fails(seed: SimHost) -> None:
    check = by_id(run_checks(seed, config(
        '[[device]]\nmatch = "10de:1b06"\nname = "gtx"\nboot = "vfio"\n')))["device:gtx"]
    assert check.status == "fail"
    assert "3 devices have ids 10de:1b06" in check.summary
    assert "@ADDRESS" in check.fix


def test_a_gpu_in_its_own_group_is_viable(seed: SimHost) -> None:
    check = by_id(run_checks(seed, config(GPU)))["group:gpu"]
    assert check.status == "ok"
    assert "0000:06:00.1" in check.summary  # its HDMI audio goes along


def test_a_device_sharing_its_group_with_the_root_disk_fails(seed: SimHost) -> None:
    check = by_id(run_checks(seed, config(
        '[[device]]\nmatch = "00:1f.3"\nname = "smbus"\n')))["group:smbus"]
    assert check.status == "fail"
    assert "also holds 0000:00:1f.2" in check.summary
    assert "/dev/sda2 is mounted on /" in check.summary
    assert "a slot whose IOMMU group holds only it" in check.fix


def test_the_host_desktop_gpu_is_a_warning(seed: SimHost) -> None:
    check = by_id(run_checks(seed, config(
        '[[device]]\nmatch = "05:00.0"\nname = "desk"\n')))["group:desk"]
    assert check.status == "warn"
    assert "Xorg" in check.summary


def test_the_boot_vga_among_the_devices_to_pass_is_flagged(seed: SimHost) -> None:
    checks = by_id(run_checks(seed, config('[[device]]\nmatch = "05:00.1"\n')))
    assert checks["boot_vga"].status == "warn"
    assert "0000:05:00.0" in checks["boot_vga"].summary
    assert "sysfb_init" in checks["boot_vga"].fix


def test_the_boot_vga_staying_home_is_ok(seed: SimHost) -> None:
    assert by_id(run_checks(seed, config(GPU)))["boot_vga"].status == "ok"


def test_a_stale_driver_override_is_flagged(sim: SimHost) -> None:
    sim.write_attr("/sys/bus/pci/devices/0000:09:00.0/driver_override", "vfio-pci")
    check = by_id(run_checks(sim, None))["driver_override:0000:09:00.0"]
    assert check.status == "warn"
    assert "driver_override=vfio-pci but is on nvidia" in check.summary
    assert "vfioctl unbind 0000:09:00.0" in check.fix


def test_an_override_waiting_for_vfio_pci_is_explained(sim: SimHost) -> None:
    base = "/sys/bus/pci/devices/0000:09:00.1"
    sim.write_attr(f"{base}/driver_override", "vfio-pci")
    sim.write_attr(f"{base}/driver/unbind", "0000:09:00.1")
    check = by_id(run_checks(sim, None))["driver_override:0000:09:00.1"]
    assert check.status == "warn"
    assert "waits for vfio-pci" in check.summary
    assert "modprobe vfio-pci" in check.fix


def test_no_override_anywhere_is_ok(seed: SimHost) -> None:
    assert by_id(run_checks(seed, None))["driver_override"].status == "ok"


def test_an_amd_polaris_gpu_without_vendor_reset_is_flagged(seed: SimHost) -> None:
    facts = _Facts(seed)
    polaris = dataclasses.replace(facts.devices["0000:06:00.0"], vendor=0x1002, device=0x67DF)
    checks = check_vendor_reset(facts, [polaris])
    assert [c.status for c in checks] == ["warn"]
    assert "vendor-reset" in checks[0].fix and "device_specific" in checks[0].fix


def test_nvidia_gpus_need_no_vendor_reset(seed: SimHost) -> None:
    facts = _Facts(seed)
    assert check_vendor_reset(facts, [facts.devices["0000:06:00.0"]]) == []


def test_boot_vfio_without_the_shim_fails(seed: SimHost) -> None:
    check = by_id(run_checks(seed, config(GPU)))["shim"]
    assert check.status == "fail"
    assert "vfioctl initramfs install" in check.fix


RELEASE = "6.1.0-sim-amd64"
SHIM_MEMBER = "./usr/lib/vfiod/early-boot.sh"


def rebuild_initramfs(sim: SimHost, codec: str = "gzip") -> None:
    """What update-initramfs does with the installed hook: the shim into the image."""
    shim = (sim.root / "var/lib/vfiod/early-boot.sh").read_bytes()
    write_image(sim.root, RELEASE, {"./init": b"#!/bin/sh\n", SHIM_MEMBER: shim}, codec)


def test_the_installed_shim_is_ok_until_the_config_changes(sim: SimHost) -> None:
    install_shim(config(GPU), sim, root=sim.root, tool="initramfs-tools")
    rebuild_initramfs(sim)
    check = by_id(run_checks(sim, config(GPU)))["shim"]
    assert check.status == "ok"
    assert f"/boot/initrd.img-{RELEASE}" in check.summary
    usb = '[[device]]\nmatch = "11:00.0"\nname = "usb"\nboot = "vfio"\n'
    check = by_id(run_checks(sim, config(GPU, usb)))["shim"]
    assert check.status == "warn"
    assert "does not match the config" in check.summary


def test_a_shim_left_behind_without_boot_entries_is_a_warning(sim: SimHost) -> None:
    install_shim(config(GPU), sim, root=sim.root, tool="dracut")
    check = by_id(run_checks(sim, config('[[device]]\nmatch = "06:00.0"\n')))["shim"]
    assert check.status == "warn"


def test_a_shim_installed_but_not_yet_in_the_initramfs_fails_and_says_rebuild(
        sim: SimHost) -> None:
    write_image(sim.root, RELEASE, {"./init": b"#!/bin/sh\n"})
    install_shim(config(GPU), sim, root=sim.root, tool="initramfs-tools")
    check = by_id(run_checks(sim, config(GPU)))["shim"]
    assert check.status == "fail"
    assert f"/boot/initrd.img-{RELEASE} does not have it" in check.summary
    assert "rebuild the initramfs" in check.fix


def test_the_rebuild_advice_names_the_machines_own_tool(sim: SimHost) -> None:
    write_image(sim.root, RELEASE, {"./init": b"#!/bin/sh\n"})
    install_shim(config(GPU), sim, root=sim.root, tool="dracut")
    (sim.root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (sim.root / "usr/bin/dracut").write_text("")
    assert "dracut --regenerate-all --force" in by_id(run_checks(sim, config(GPU)))["shim"].fix


def test_a_zstd_initramfs_is_read_too(sim: SimHost) -> None:
    install_shim(config(GPU), sim, root=sim.root, tool="initramfs-tools")
    rebuild_initramfs(sim, codec="zstd")
    assert by_id(run_checks(sim, config(GPU)))["shim"].status == "ok"


def test_an_initramfs_with_an_older_shim_is_a_warning(sim: SimHost) -> None:
    install_shim(config(GPU), sim, root=sim.root, tool="initramfs-tools")
    write_image(sim.root, RELEASE, {SHIM_MEMBER: b"#!/bin/sh\n# an older one\n"})
    check = by_id(run_checks(sim, config(GPU)))["shim"]
    assert check.status == "warn"
    assert "older early-boot shim" in check.summary


def test_no_initramfs_for_the_running_kernel_is_a_warning_not_ok(sim: SimHost) -> None:
    install_shim(config(GPU), sim, root=sim.root, tool="initramfs-tools")
    osrelease = sim.root / "proc/sys/kernel/osrelease"
    osrelease.parent.mkdir(parents=True, exist_ok=True)
    osrelease.write_text(RELEASE + "\n")
    check = by_id(run_checks(sim, config(GPU)))["shim"]
    assert check.status == "warn"
    assert f"no initramfs for the running kernel {RELEASE}" in check.summary


def test_a_shim_left_in_the_initramfs_after_removal_is_a_warning(sim: SimHost) -> None:
    install_shim(config(GPU), sim, root=sim.root, tool="initramfs-tools")
    rebuild_initramfs(sim)
    (sim.root / "var/lib/vfiod/early-boot.sh").unlink()  # vfioctl initramfs install, no boot
    check = by_id(run_checks(sim, config('[[device]]\nmatch = "06:00.0"\n')))["shim"]
    assert check.status == "warn"
    assert "still has the early-boot shim" in check.summary


def test_with_the_iommu_off_the_doctor_never_advises_reinstalling_the_shim(
        noiommu: SimHost) -> None:
    checks = run_checks(noiommu, config(GPU))
    shim = by_id(checks)["shim"]
    assert shim.status == "warn"
    assert "IOMMU is off" in shim.summary
    assert not any("initramfs install" in c.fix for c in checks)


def test_interrupt_remapping_on_is_ok(seed: SimHost) -> None:
    check = by_id(run_checks(seed, None))["intremap"]
    assert check.status == "ok"
    assert "IR-IO-APIC" in check.summary


def _interrupts_without_remapping(sim: SimHost) -> None:
    path = sim.root / "proc/interrupts"
    path.write_text(path.read_text().replace("IR-", ""))


def test_intremap_off_on_the_command_line_fails_with_its_removal(sim: SimHost) -> None:
    (sim.root / "proc/cmdline").write_text("ro intel_iommu=on intremap=off\n")
    _interrupts_without_remapping(sim)
    checks = by_id(run_checks(sim, None))
    assert checks["intremap"].status == "fail"
    assert "No interrupt remapping support" in checks["intremap"].summary
    assert "remove intremap=off" in checks["intremap"].fix
    assert worst(checks.values()) == "fail"


def test_an_iommu_without_remapping_hardware_is_named(sim: SimHost) -> None:
    _interrupts_without_remapping(sim)
    (sim.root / "sys/devices/virtual/iommu/dmar0/intel-iommu/ecap").write_text("f00f56\n")
    check = by_id(run_checks(sim, None))["intremap"]
    assert check.status == "fail"
    assert "dmar0 cannot remap" in check.summary
    assert "allow_unsafe_interrupts" in check.fix


def test_allow_unsafe_interrupts_is_a_warning(sim: SimHost) -> None:
    _interrupts_without_remapping(sim)
    param = sim.root / "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts"
    param.parent.mkdir(parents=True)
    param.write_text("Y\n")
    check = by_id(run_checks(sim, None))["intremap"]
    assert check.status == "warn"
    assert "allow_unsafe_interrupts" in check.summary


def test_interrupt_remapping_is_not_judged_with_the_iommu_off(noiommu: SimHost) -> None:
    assert "intremap" not in by_id(run_checks(noiommu, None))


def test_the_doctor_never_writes(seed: SimHost) -> None:
    before = list(seed.write_log)
    run_checks(seed, config(GPU, '[[device]]\nmatch = "00:1f.3"\n'))
    assert seed.write_log == before


def test_checks_serialise_to_json(seed: SimHost) -> None:
    row = run_checks(seed, None)[0].model_dump()
    assert set(row) == {"id", "status", "summary", "fix"}


def test_boot_values_conflicting_in_one_group_fail_with_file_and_line(seed: SimHost) -> None:
    audio_home = '[[device]]\nmatch = "0000:06:00.1"\nname = "gpu-audio"\nboot = "host"\n'
    checks = by_id(run_checks(seed, config(GPU, audio_home)))
    conflict = checks["boot:group31"]
    assert conflict.status == "fail"
    assert conflict.summary.startswith("/etc/vfiod/vfiod.toml:9: device[1].boot:")
    assert "0000:06:00.1" in conflict.summary and "0000:06:00.0" in conflict.summary
    assert "line 4 and line 9" in conflict.fix
    assert worst(checks.values()) == "fail"


def test_an_entry_without_boot_in_a_claimed_group_is_no_conflict(seed: SimHost) -> None:
    audio_named = '[[device]]\nmatch = "0000:06:00.1"\nname = "gpu-audio"\n'
    checks = by_id(run_checks(seed, config(GPU, audio_named)))
    assert checks["boot"].status == "ok"
    assert not any(c.startswith("boot:group") for c in checks)


def test_doctor_says_the_dying_amd_card_needs_vendor_reset_and_it_is_missing() -> None:
    with SimHost("dying-cards") as dying:
        config = parse_config('[[device]]\nmatch = "0000:01:00.0"\non_release = "reset"\n')
        check = by_id(run_checks(dying, config))["vendor_reset:0000:01:00.0"]
        assert check.status == "warn"
        assert "Polaris 10" in check.summary and "reset bug" in check.summary


def test_doctor_is_content_once_vendor_reset_is_loaded() -> None:
    with SimHost("dying-cards") as dying:
        dying.load_module("vendor_reset")
        config = parse_config('[[device]]\nmatch = "0000:01:00.0"\non_release = "reset"\n')
        check = by_id(run_checks(dying, config))["vendor_reset:0000:01:00.0"]
        assert check.status == "ok" and "device_specific first" in check.summary
