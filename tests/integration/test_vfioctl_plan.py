"""vfioctl bind|unbind|reset --dry-run and vfioctl check-domain against a running vfiod."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from .helpers import Vfiod, sim_driver
from .vfioctl_helpers import error_line, vfioctl, vfioctl_argv

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"
SEED_XML = Path(__file__).resolve().parents[1] / "data" / "seed-domain.xml"


def with_hostdevs(tmp_path: Path, remove: tuple[str, ...] = (), add: tuple[str, ...] = ()
                  ) -> Path:
    """The seed's domain XML with these PCI hostdevs taken out or put in."""
    root = ET.parse(SEED_XML).getroot()
    devices = root.find("devices")
    assert devices is not None
    for hostdev in devices.findall("hostdev"):
        a = hostdev.find("source/address")
        assert a is not None
        address = "0000:%02x:%02x.%x" % (int(a.get("bus", "0"), 16),
                                         int(a.get("slot", "0"), 16),
                                         int(a.get("function", "0"), 16))
        if address in remove:
            devices.remove(hostdev)
    for address in add:
        bus, rest = address[5:].split(":")
        slot, function = rest.split(".")
        hostdev = ET.SubElement(devices, "hostdev", mode="subsystem", type="pci",
                                managed="yes")
        ET.SubElement(ET.SubElement(hostdev, "source"), "address", domain="0x0000",
                      bus=f"0x{bus}", slot=f"0x{slot}", function=f"0x{function}")
    path = tmp_path / "domain.xml"
    ET.ElementTree(root).write(path)
    return path


def test_dry_run_bind_prints_the_plan_and_moves_nothing(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", "06:00.0", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"dry run: bind {GPU} (nothing is changed)",
        f"  {GPU}  nvidia -> vfio-pci",
        f"  {AUDIO}  snd_hda_intel -> vfio-pci",
        "  would load: vfio-pci",
        f"  would move: {GPU}, {AUDIO}",
    ]
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_dry_run_of_a_refused_bind_exits_as_the_real_bind(vfiod: Vfiod) -> None:
    dry = vfioctl(vfiod.address, "bind", "05:00.0", "--dry-run")
    real = vfioctl(vfiod.address, "bind", "05:00.0")
    assert dry.returncode == real.returncode == 4
    assert error_line(dry) == error_line(real)
    assert "guard (soft, refuses unless --force)" in dry.stdout and "Xorg" in dry.stdout


def test_dry_run_json_is_the_whole_plan(vfiod: Vfiod) -> None:
    assert vfioctl(vfiod.address, "bind", GPU).returncode == 0
    result = vfioctl(vfiod.address, "unbind", GPU, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["operation"] == "unbind" and plan["error"] is None
    assert [(m["address"], m["from"], m["to"]) for m in plan["members"]] == [
        (GPU, "vfio-pci", "nvidia"), (AUDIO, "vfio-pci", "snd_hda_intel")]
    assert sim_driver(vfiod.sim_root, GPU) == "vfio-pci"


def test_dry_run_reset_lists_the_methods_it_would_try(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "reset", "00:1b.0", "--force", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "  would try, in order: flr, pm" in result.stdout.splitlines()


def test_json_without_dry_run_is_a_usage_error(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "bind", GPU, "--json")
    assert result.returncode == 2


def test_check_domain_of_the_seed_guest_passes(vfiod: Vfiod) -> None:
    result = vfioctl(vfiod.address, "check-domain", str(SEED_XML))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 7 and all(line.startswith("ok ") for line in lines[:6])
    assert lines[-1].startswith("ready")


def test_check_domain_reads_stdin(vfiod: Vfiod) -> None:
    result = subprocess.run(vfioctl_argv(vfiod.address, "check-domain", "-", "--json"),
                            input=SEED_XML.read_text(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert {row["severity"] for row in json.loads(result.stdout)} == {"ok"}


def test_check_domain_names_a_missing_group_mate_with_its_fix(vfiod: Vfiod,
                                                              tmp_path: Path) -> None:
    domain = with_hostdevs(tmp_path, remove=(AUDIO,))
    result = vfioctl(vfiod.address, "check-domain", str(domain), "--json")
    assert result.returncode == 1
    [error] = [r for r in json.loads(result.stdout) if r["severity"] == "error"]
    assert error["device"] == GPU
    assert f"fix: add a <hostdev> for {AUDIO} to the domain" in error["message"]


def test_check_domain_refuses_the_root_disks_controller(vfiod: Vfiod, tmp_path: Path) -> None:
    domain = with_hostdevs(tmp_path, add=("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"))
    result = vfioctl(vfiod.address, "check-domain", str(domain))
    assert result.returncode == 1
    assert "error    0000:00:1f.2: the host needs it: /dev/sda2 is mounted on / (ext4); " \
           "fix: give the guest another device" in result.stdout


def test_check_domain_refuses_the_desktops_gpu(vfiod: Vfiod, tmp_path: Path) -> None:
    domain = with_hostdevs(tmp_path, add=("0000:05:00.0", "0000:05:00.1"))
    result = vfioctl(vfiod.address, "check-domain", str(domain))
    assert result.returncode == 1
    assert "0000:05:00.0: the host uses it: /dev/dri/card0 is held open by Xorg" in \
        result.stdout
    assert "fix: stop using it on the host first" in result.stdout


def test_check_domain_names_a_device_whose_ids_changed(make_vfiod: Callable[..., Vfiod],
                                                       tmp_path: Path) -> None:
    daemon = make_vfiod(config='[[device]]\nmatch = "1002:67df@0000:06:00.0"\n'
                               'name = "gpu"\n').start()
    result = vfioctl(daemon.address, "check-domain", str(SEED_XML))
    assert result.returncode == 1
    assert "0000:06:00.0: the config file's 'gpu' says '1002:67df@0000:06:00.0', but the " \
           "device there is 10de:1b06" in result.stdout
    assert "correct the domain's <hostdev> address or the config file's match" in \
        result.stdout


def test_check_domain_of_an_unreadable_file_is_a_usage_error(vfiod: Vfiod,
                                                             tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain><devices>")
    result = vfioctl(vfiod.address, "check-domain", str(bad))
    assert result.returncode == 2
    assert "cannot parse the domain XML" in error_line(result)
