"""`vfioctl initramfs install --root DIR`: the shim for an image, from its config alone.

The shim is rendered without reading any device; at boot it finds each device's IOMMU
group itself (run here with sh against the simulated machine, as tests/test_initramfs.py
does), so a group is still claimed whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vfiod.config import Config, parse_config
from vfiod.ctl import exitcodes, local
from vfiod.ctl.main import main
from vfiod.initramfs import (INTEGRATIONS, SHIM_PATH, ShimError, install_shim_offline,
                             render_shim, shim_is_current)
from vfiod.discovery import scan
from vfiod.sim import SimHost

from test_initramfs import driver, override, run_shim

GPU = '[[device]]\nmatch = "10de:1b06@0000:06:00.0"\nname = "gpu"\nboot = "vfio"\n'
AUDIO = '[[device]]\nmatch = "10de:10ef@0000:06:00.1"\nname = "gpu-audio"\nboot = "vfio"\n'


def config(*tables: str) -> Config:
    return parse_config("\n".join(tables), "/etc/vfiod/vfiod.toml")


def image_root(tmp_path: Path, config_text: str = "") -> Path:
    """A chroot-like tree with initramfs-tools installed and, maybe, vfiod's config."""
    root = tmp_path / "image"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/update-initramfs").write_text("")
    if config_text:
        (root / "etc/vfiod").mkdir(parents=True)
        (root / "etc/vfiod/vfiod.toml").write_text(config_text)
    return root


def test_offline_install_writes_the_shim_and_the_hooks_into_the_image(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    result = install_shim_offline(config(GPU, AUDIO), root=root)
    assert result.tool == "initramfs-tools"
    assert [d.address for d in result.claimed] == ["0000:06:00.0", "0000:06:00.1"]
    shim = (root / SHIM_PATH.lstrip("/")).read_text()
    assert "\"$1\" '-' 0000:06:00.0 10de:1b06 'gpu'" in shim
    for _, dest in INTEGRATIONS["initramfs-tools"]:
        assert (root / dest.lstrip("/")).is_file()
    assert result.next_steps == ["update-initramfs -u -k all"]


def test_offline_needs_ids_and_address_for_each_boot_entry(tmp_path: Path) -> None:
    address_only = '[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\nboot = "vfio"\n'
    with pytest.raises(ShimError, match=r"gpu: offline, .* needs ids and address"):
        install_shim_offline(config(address_only), root=image_root(tmp_path))
    assert not (tmp_path / "image" / SHIM_PATH.lstrip("/")).exists()


def test_offline_shim_claims_a_group_whose_every_member_is_listed(
        sim: SimHost, tmp_path: Path) -> None:
    run = run_shim(render_shim(config(GPU, AUDIO), None), sim, tmp_path)
    assert run.returncode == 0, run.stderr
    assert override(sim, "0000:06:00.0") == override(sim, "0000:06:00.1") == "vfio-pci"
    assert run.modprobe_calls == ["vfio-pci"]


def test_offline_shim_leaves_a_group_with_an_unlisted_member_to_the_host(
        sim: SimHost, tmp_path: Path) -> None:
    run = run_shim(render_shim(config(GPU), None), sim, tmp_path)
    assert run.returncode == 1
    assert "its IOMMU group also holds 0000:06:00.1" in run.stderr
    assert override(sim, "0000:06:00.0") is None
    assert driver(sim, "0000:06:00.0") == "nvidia"


def test_offline_shim_refuses_the_whole_group_when_one_member_moved(
        sim: SimHost, tmp_path: Path) -> None:
    moved = AUDIO.replace("10de:10ef", "10de:0fb9")
    run = run_shim(render_shim(config(GPU, moved), None), sim, tmp_path)
    assert run.returncode == 1
    assert "expects 10de:0fb9" in run.stderr
    # The group was found at boot, so the GPU is left too (no half-claimed group).
    assert override(sim, "0000:06:00.0") is None and override(sim, "0000:06:00.1") is None


def test_the_doctor_counts_an_offline_shim_as_current(sim: SimHost) -> None:
    install_shim_offline(config(GPU, AUDIO), root=sim.root, tool="initramfs-tools")
    assert shim_is_current(config(GPU, AUDIO), sim, scan(sim)) is True
    assert shim_is_current(config(GPU), sim, scan(sim)) is False


def test_vfioctl_initramfs_install_root_reads_the_images_config_and_no_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    root = image_root(tmp_path, GPU + AUDIO)

    def no_host(simulate: str | None) -> None:
        raise AssertionError("the offline install opened a host")

    monkeypatch.setattr(local, "open_host", no_host)
    monkeypatch.delenv("VFIOD_CONFIG", raising=False)
    assert main(["initramfs", "install", "--root", str(root)]) == exitcodes.OK
    out = capsys.readouterr().out
    assert "claims 0000:06:00.1 (10de:10ef) at boot: gpu-audio" in out
    assert "next: update-initramfs -u -k all" in out
    assert (root / SHIM_PATH.lstrip("/")).is_file()


def test_vfioctl_initramfs_install_root_refuses_simulate(tmp_path: Path) -> None:
    root = image_root(tmp_path, GPU)
    assert main(["initramfs", "install", "--root", str(root), "--simulate",
                 "seed-x99"]) == exitcodes.USAGE
