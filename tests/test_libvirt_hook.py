"""The libvirt qemu hook, run for real against the seed's domain XML and a fake busctl."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vfiod.libvirt_hook import HOOK_PATH, PROBE_TIMEOUT, install_hook, render_hook

SEED_XML = (Path(__file__).resolve().parent / "data" / "seed-domain.xml").read_text()

# The seed guest's six PCI hostdevs, in its XML's order.
SEED_HOSTDEVS = ["0000:11:00.0", "0000:00:1b.0", "0000:06:00.0", "0000:06:00.1",
                 "0000:00:11.0", "0000:00:11.4"]

# Records each call as a JSON line and answers like vfiod would: Bind of a GPU function
# moves its whole slot the first time; FAKE_REFUSE names an address vfiod refuses.
FAKE_BUSCTL = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    state = os.environ["FAKE_LOG"] + ".bound"
    bound = open(state).read().split() if os.path.exists(state) else []
    words = [a for a in args if not a.startswith("--")]
    if words[0] == "call" and words[4] == "Bind":
        address = words[6]
        if address == os.environ.get("FAKE_REFUSE"):
            print("Call failed: " + address + ": refusing to bind it to vfio-pci: "
                  "/dev/sdb1 is mounted on /data (ext4)", file=sys.stderr)
            sys.exit(1)
        group = [address[:-1] + "0", address[:-1] + "1"] if address.startswith("0000:06") \\
            else [address]
        moved = [a for a in group if a not in bound]
        open(state, "w").write(" ".join(bound + moved))
        print(json.dumps({{"type": "as", "data": [moved]}}))
    elif words[0] == "call" and words[4] == "CheckDevices":
        rows = [[a, "ok", a + ": ready"] for a in words[7:]]
        if os.environ.get("FAKE_CHECK_ERROR"):
            rows += [[words[7], "error", os.environ["FAKE_CHECK_ERROR"]]]
        print(json.dumps({{"type": "a(sss)", "data": [rows]}}))
    elif words[0] == "call" and words[4] == "Unbind":
        print(json.dumps({{"type": "as", "data": [[words[6]]]}}))
    elif words[0] == "call" and words[4] == "Get":
        print(json.dumps({{"type": "v", "data": [{{"type": "s", "data": "vfio"}}]}}))
''')


#: The hook's first call: is vfiod there and answering?
PROBE = ("Get", "/org/vfiod1")
#: Its second, before prepare binds anything: CheckDevices of the whole list.
CHECK = ("CheckDevices", *SEED_HOSTDEVS)


@pytest.fixture
def hook(tmp_path: Path) -> Path:
    fake = tmp_path / "busctl"
    fake.write_text(FAKE_BUSCTL.format(python=sys.executable))
    fake.chmod(0o755)
    path = install_hook(tmp_path / "root", busctl=str(fake), timeout=5)
    return path


def run_hook(hook: Path, tmp_path: Path, *args: str, xml: str = SEED_XML,
             refuse: str = "", check_error: str = ""
             ) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "FAKE_LOG": str(log), "FAKE_REFUSE": refuse,
           "FAKE_CHECK_ERROR": check_error}
    env.pop("VFIOD_BUSCTL", None)
    proc = subprocess.run([str(hook), *args], input=xml, capture_output=True, text=True,
                          env=env, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def verbs(calls: list[list[str]]) -> list[tuple[str, ...]]:
    """(method, address) of each call, options stripped."""
    out = []
    for call in calls:
        words = [w for w in call if not w.startswith("--")]
        # Properties.Get by the object's path; Bind and Unbind by the address;
        # CheckDevices by every address.
        if words[4] == "Get":
            out.append((words[4], words[2]))
        elif words[4] == "CheckDevices":
            out.append((words[4], *words[7:]))
        else:
            out.append((words[4], words[6]))
    return out


def test_hook_is_installed_where_libvirt_looks_and_is_executable(hook: Path,
                                                                 tmp_path: Path) -> None:
    assert hook == tmp_path / "root" / HOOK_PATH.lstrip("/")
    assert os.access(hook, os.X_OK)


def test_prepare_begin_binds_every_pci_hostdev_of_the_domain(hook: Path,
                                                            tmp_path: Path) -> None:
    proc, calls = run_hook(hook, tmp_path, "Windows", "prepare", "begin", "-")
    assert proc.returncode == 0, proc.stderr
    assert verbs(calls) == [PROBE, CHECK] + [("Bind", a) for a in SEED_HOSTDEVS]


def test_prepare_refuses_the_domain_on_any_error_of_the_check_and_binds_nothing(
        hook: Path, tmp_path: Path) -> None:
    problem = ("0000:11:00.0: IOMMU group 40 also holds 0000:12:00.0 (...), which the "
               "domain does not name; fix: add a <hostdev> for 0000:12:00.0")
    proc, calls = run_hook(hook, tmp_path, "Windows", "prepare", "begin", "-",
                           check_error=problem)
    assert proc.returncode == 1
    assert verbs(calls) == [PROBE, CHECK]
    assert proc.stderr.splitlines() == [f"vfiod-hook: Windows: not starting: {problem}"]


def test_calls_go_to_vfiod_on_the_system_bus_with_a_timeout(hook: Path,
                                                           tmp_path: Path) -> None:
    _, calls = run_hook(hook, tmp_path, "Windows", "prepare", "begin", "-")
    assert calls[2] == ["--system", "--json=short", "--timeout=5", "call", "org.vfiod1",
                        "/org/vfiod1", "org.vfiod1.Manager", "Bind", "sa{sv}",
                        "0000:11:00.0", "0"]


def test_vfiod_is_first_asked_a_cheap_question_with_a_short_timeout(
        tmp_path: Path) -> None:
    fake = tmp_path / "busctl"
    fake.write_text(FAKE_BUSCTL.format(python=sys.executable))
    fake.chmod(0o755)
    hook = install_hook(tmp_path / "root", busctl=str(fake), timeout=20)
    _, calls = run_hook(hook, tmp_path, "Windows", "prepare", "begin", "-")
    assert calls[0] == ["--system", "--json=short", f"--timeout={PROBE_TIMEOUT}",
                        "call", "org.vfiod1", "/org/vfiod1", "org.freedesktop.DBus.Properties",
                        "Get", "ss", "org.vfiod1.Manager", "Version"]
    assert calls[1][2] == "--timeout=20"


def test_each_bind_is_one_clear_log_line(hook: Path, tmp_path: Path) -> None:
    proc, _ = run_hook(hook, tmp_path, "Windows", "prepare", "begin", "-")
    lines = proc.stderr.splitlines()
    assert len(lines) == 6
    assert lines[2] == ("vfiod-hook: Windows: 0000:06:00.0 -> vfio-pci: moved 0000:06:00.0 "
                        "0000:06:00.1 (libvirt also manages it: managed='yes')")
    assert lines[3].startswith("vfiod-hook: Windows: 0000:06:00.1 -> vfio-pci: already on")


def test_a_refused_device_stops_the_guest_and_returns_what_moved(hook: Path,
                                                                tmp_path: Path) -> None:
    proc, calls = run_hook(hook, tmp_path, "Windows", "prepare", "begin", "-",
                           refuse="0000:00:11.4")
    assert proc.returncode == 1
    assert "not starting: vfiod cannot bind 0000:00:11.4: Call failed" in proc.stderr
    moved = ["0000:11:00.0", "0000:00:1b.0", "0000:06:00.0", "0000:06:00.1", "0000:00:11.0"]
    assert verbs(calls) == ([PROBE, CHECK] + [("Bind", a) for a in SEED_HOSTDEVS]
                            + [("Unbind", a) for a in reversed(moved)])
    # Only the functions this run moved go back, each alone (group = false).
    assert calls[2 + len(SEED_HOSTDEVS)][-7:] == ["Unbind", "sa{sv}", "0000:00:11.0", "1",
                                              "group", "b", "false"]


def test_release_end_asks_vfiod_for_each_devices_state_and_changes_nothing(
        hook: Path, tmp_path: Path) -> None:
    proc, calls = run_hook(hook, tmp_path, "Windows", "release", "end", "-")
    assert proc.returncode == 0, proc.stderr
    assert verbs(calls) == [PROBE] + [("Get", "/org/vfiod1/device/pci_" +
                             a.replace(":", "_").replace(".", "_")) for a in SEED_HOSTDEVS]
    assert "vfiod-hook: Windows: released 0000:06:00.0 (now vfio)" in proc.stderr


@pytest.mark.parametrize("operation", [("start", "begin"), ("started", "begin"),
                                       ("stopped", "end"), ("prepare", "end"),
                                       ("migrate", "begin")])
def test_other_operations_call_nothing(hook: Path, tmp_path: Path,
                                       operation: tuple[str, str]) -> None:
    proc, calls = run_hook(hook, tmp_path, "Windows", *operation, "-")
    assert proc.returncode == 0
    assert calls == []


def test_a_domain_without_pci_hostdevs_calls_nothing(hook: Path, tmp_path: Path) -> None:
    xml = "<domain type='kvm'><name>plain</name><devices><hostdev mode='subsystem' " \
          "type='usb'><source><vendor id='0x046d'/></source></hostdev></devices></domain>"
    proc, calls = run_hook(hook, tmp_path, "plain", "prepare", "begin", "-", xml=xml)
    assert proc.returncode == 0
    assert calls == []


def test_the_hook_never_calls_back_into_libvirt() -> None:
    text = render_hook()
    assert "virsh" not in text.replace("never virsh", "").replace("never calls virsh", "")
    assert "libvirt-python" not in text and "import libvirt" not in text


def test_rendered_hook_uses_only_the_standard_library() -> None:
    text = render_hook()
    imports = set(re.findall(r"^\s*import (\w+)", text, re.M))
    assert imports == {"json", "os", "subprocess", "sys", "xml", "syslog"}
    assert not re.search(r"^\s*from ", text, re.M)


def domain(*devices: str) -> str:
    """A domain XML with these device elements."""
    return ("<domain type='kvm'><name>hostile</name><devices>" + "".join(devices)
            + "</devices></domain>")


def pci_hostdev(address: str, managed: str = "yes", alias: str = "") -> str:
    """A PCI <hostdev> whose source address element is *address*."""
    named = f"<alias name='{alias}'/>" if alias else ""
    return (f"<hostdev mode='subsystem' type='pci' managed='{managed}'>"
            f"<source>{address}</source>{named}</hostdev>")


GPU_ADDRESS = "<address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>"


@pytest.mark.parametrize("address, reason", [
    ("<address/>", "its address has no bus"),
    ("<address domain='0x0000' bus='0x06' slot='0x00'/>", "its address has no function"),
    ("<address bus='0x1ff' slot='0x00' function='0x0'/>", "its address's bus '0x1ff' is not a number from 0 to 0xff"),
    ("<address bus='six' slot='0x00' function='0x0'/>", "its address's bus 'six' is not a number"),
    ("<address bus='0x06' slot='0x00' function='0x8'/>", "its address's function '0x8' is not a number from 0 to 0x7"),
    ("<address bus='-1' slot='0x00' function='0x0'/>", "its address's bus '-1' is not a number"),
    ("", "it has no <source><address .../></source>"),
])
def test_a_hostdev_without_a_readable_address_refuses_the_domain_naming_it(
        hook: Path, tmp_path: Path, address: str, reason: str) -> None:
    xml = domain(pci_hostdev(GPU_ADDRESS), pci_hostdev(address, alias="hostdev1"))
    proc, calls = run_hook(hook, tmp_path, "hostile", "prepare", "begin", "-", xml=xml)
    assert proc.returncode == 1
    assert calls == []  # nothing is bound, not even the good one
    assert ("vfiod-hook: hostile: not starting: <hostdev> #2 'hostdev1': " + reason
            in proc.stderr), proc.stderr


def test_an_empty_address_is_never_taken_for_0000_00_00_0(hook: Path, tmp_path: Path) -> None:
    proc, calls = run_hook(hook, tmp_path, "hostile", "prepare", "begin", "-",
                           xml=domain(pci_hostdev("<address/>")))
    assert proc.returncode == 1
    assert "0000:00:00.0" not in json.dumps(calls) + proc.stderr


def test_addresses_are_read_as_libvirt_reads_them(hook: Path, tmp_path: Path) -> None:
    xml = domain(pci_hostdev("<address bus='6' slot='0' function='1'/>"),
                 pci_hostdev("<address domain='0' bus='017' slot='0x1f' function='7'/>"))
    proc, calls = run_hook(hook, tmp_path, "g", "prepare", "begin", "-", xml=xml)
    assert proc.returncode == 0, proc.stderr
    assert verbs(calls) == [PROBE, ("CheckDevices", "0000:06:00.1", "0000:0f:1f.7"),
                            ("Bind", "0000:06:00.1"), ("Bind", "0000:0f:1f.7")]


def test_an_sriov_vf_interface_is_bound_in_the_domains_order(hook: Path,
                                                            tmp_path: Path) -> None:
    vf = ("<interface type='hostdev' managed='yes'><source><address type='pci' "
          "domain='0x0000' bus='0x03' slot='0x10' function='0x2'/></source>"
          "<mac address='52:54:00:6d:90:02'/></interface>")
    xml = domain(pci_hostdev("<address bus='0x11' slot='0x00' function='0x0'/>"), vf,
                 pci_hostdev(GPU_ADDRESS))
    proc, calls = run_hook(hook, tmp_path, "g", "prepare", "begin", "-", xml=xml)
    assert proc.returncode == 0, proc.stderr
    bound = ["0000:11:00.0", "0000:03:10.2", "0000:06:00.0"]
    assert verbs(calls) == [PROBE, ("CheckDevices", *bound)] + [("Bind", a) for a in bound]


def test_an_sriov_interface_without_an_address_refuses_the_domain(hook: Path,
                                                                  tmp_path: Path) -> None:
    vf = "<interface type='hostdev'><source/></interface>"
    proc, calls = run_hook(hook, tmp_path, "g", "prepare", "begin", "-", xml=domain(vf))
    assert proc.returncode == 1 and calls == []
    assert "<interface type='hostdev'> #1: it has no <source><address" in proc.stderr


def test_2000_duplicates_of_a_hostdev_are_bound_once(hook: Path, tmp_path: Path) -> None:
    xml = domain(*[pci_hostdev(GPU_ADDRESS, managed="no")] * 2000,
                 pci_hostdev(GPU_ADDRESS.replace("0x06", "0x09")))
    proc, calls = run_hook(hook, tmp_path, "g", "prepare", "begin", "-", xml=xml)
    assert proc.returncode == 0, proc.stderr
    assert verbs(calls) == [PROBE, ("CheckDevices", "0000:06:00.0", "0000:09:00.0"),
                            ("Bind", "0000:06:00.0"), ("Bind", "0000:09:00.0")]


def test_release_logs_an_unreadable_hostdev_and_reports_the_others(hook: Path,
                                                                   tmp_path: Path) -> None:
    xml = domain(pci_hostdev(GPU_ADDRESS), pci_hostdev("<address/>"))
    proc, calls = run_hook(hook, tmp_path, "g", "release", "end", "-", xml=xml)
    assert proc.returncode == 0
    assert verbs(calls) == [PROBE, ("Get", "/org/vfiod1/device/pci_0000_06_00_0")]
    assert "skipped on release: <hostdev> #2: its address has no bus" in proc.stderr


def test_a_domain_that_declares_a_dtd_is_refused_without_a_call(hook: Path,
                                                                tmp_path: Path) -> None:
    # An external parameter entity: expat does not fetch it, and the hook must not
    # go on as if the document were libvirt's (found by tests/torture).
    xml = ("<!DOCTYPE d [<!ENTITY % p SYSTEM 'http://127.0.0.1:9/x.dtd'> %p;]>"
           + SEED_XML[SEED_XML.index("<domain"):])
    proc, calls = run_hook(hook, tmp_path, "Windows", "prepare", "begin", "-", xml=xml)
    assert proc.returncode == 1
    assert calls == []
    assert proc.stderr.strip() == ("vfiod-hook: the domain XML declares a DTD or entities, "
                                   "which libvirt never writes: refusing it")


def test_check_domain_reads_a_domain_as_the_hook_does() -> None:
    from vfiod.libvirt_hook import domain_hostdevs

    devices, problems = domain_hostdevs(SEED_XML)
    assert devices == [(a, True) for a in SEED_HOSTDEVS] and problems == []


def test_check_domain_names_an_unreadable_hostdev_as_the_hook_does() -> None:
    from vfiod.libvirt_hook import domain_hostdevs

    xml = domain(pci_hostdev("<address bus='0x06' slot='0x00' function='0x0'/>"),
                 pci_hostdev("<address/>"))
    devices, problems = domain_hostdevs(xml)
    assert devices == [("0000:06:00.0", True)]
    assert problems == ["<hostdev> #2: its address has no bus"]


def test_check_domain_refuses_xml_that_does_not_parse() -> None:
    from vfiod.libvirt_hook import domain_hostdevs

    with pytest.raises(ValueError, match="cannot parse the domain XML"):
        domain_hostdevs("<domain><devices>")
