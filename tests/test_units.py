"""The files vfiod ships for systemd, D-Bus and polkit, and `make install`."""

from __future__ import annotations

import marshal
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfiod.privatebus import PROJECT_POLICY, PrivateBus

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "vfiod.service"
BUS_POLICY = REPO / "dbus" / "org.vfiod1.conf"
#: The bus policy's one copy: package data, which the private bus and `make install` use.
PACKAGED_POLICY = REPO / "vfiod" / "data" / "org.vfiod1.conf"
ACTIVATION = REPO / "dbus" / "org.vfiod1.service"
POLKIT = REPO / "dbus" / "org.vfiod1.policy"

#: The unit's ExecReload: the daemon's Reload method, synchronously.
RELOAD_COMMAND = "busctl --timeout=60 call org.vfiod1 /org/vfiod1 org.vfiod1.Manager Reload"
#: The exposure systemd-analyze gave the unit (systemd 252); it must never rise.
MAX_EXPOSURE = 2.4
NOBODY = 65534


def unit_with_bindir(tmp_path: Path) -> Path:
    """The unit as `make install` writes it, pointing at an existing vfiod."""
    bindir = Path(sys.executable).parent  # the venv's: it holds a vfiod entry point
    path = tmp_path / "vfiod.service"
    path.write_text(UNIT.read_text().replace("@bindir@", str(bindir)))
    return path


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


# -- systemd -----------------------------------------------------------------------------

@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "verify", str(unit_with_bindir(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""


@needs_analyze
def test_unit_exposure_stays_at_or_below_the_measured_figure(tmp_path: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(unit_with_bindir(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for vfiod\.service: (\d+\.\d+)", proc.stdout)
    assert m is not None, proc.stdout + proc.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_unit_declares_what_the_daemon_relies_on() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["notify"]
    assert settings["BusName"] == ["org.vfiod1"]
    assert settings["ExecStart"] == ["@bindir@/vfiod"]
    assert settings["ExecReload"] == [RELOAD_COMMAND]
    assert settings["Restart"] == ["on-failure"]
    assert settings["StateDirectory"] == ["vfiod"]
    assert settings["ConfigurationDirectory"] == ["vfiod"]
    assert "WatchdogSec" in settings
    assert set(settings["ReadWritePaths"][0].split()) == {"/sys/bus/pci", "/sys/devices"}
    assert set(settings["CapabilityBoundingSet"][0].split()) == {
        "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}


def test_unit_lets_the_guards_open_block_devices_read_only_and_nothing_more() -> None:
    # The O_EXCL probe of every disk below a device needs the block nodes, read-only.
    allows = [line.partition("=")[2].split() for line in UNIT.read_text().splitlines()
              if line.startswith("DeviceAllow=")]
    block = [a for a in allows if a[0].startswith("block-")]
    assert block == [["block-*", "r"]]
    assert "DevicePolicy=closed" in UNIT.read_text().splitlines()


def test_unit_lets_the_fence_and_the_hot_reset_open_dev_vfio_and_nothing_else_new() -> None:
    lines = [line for line in UNIT.read_text().splitlines() if not line.startswith("#")]
    allowed = {line.partition("=")[2] for line in lines if line.startswith("DeviceAllow=")}
    # The group nodes (any number) and the container, read-write; DevicePolicy stays closed.
    assert {"char-vfio rw", "/dev/vfio/vfio rw"} <= allowed
    assert "DevicePolicy=closed" in lines
    assert not any(entry.split()[0] in ("char-misc", "char-*", "/dev/vfio") for entry in allowed)


# -- D-Bus and polkit files --------------------------------------------------------------

def test_bus_policy_lets_only_root_own_and_everyone_call() -> None:
    root = ET.parse(BUS_POLICY).getroot()
    assert root.tag == "busconfig"
    owners = [(p.attrib, a.attrib) for p in root.iter("policy") for a in p
              if "own" in a.attrib]
    assert owners == [({"user": "root"}, {"own": "org.vfiod1"})]
    default = next(p for p in root.iter("policy") if p.get("context") == "default")
    interfaces = {a.get("send_interface") for a in default if a.tag == "allow"
                  and a.get("send_destination") == "org.vfiod1"}
    assert {"org.vfiod1.Manager", "org.vfiod1.Device", "org.freedesktop.DBus.Properties",
            "org.freedesktop.DBus.Introspectable",
            "org.freedesktop.DBus.ObjectManager"} <= interfaces
    assert not [a for a in root.iter("deny")]


def test_bus_policy_has_one_copy_the_packages_and_dbus_links_to_it() -> None:
    assert BUS_POLICY.is_symlink()
    assert BUS_POLICY.resolve() == PACKAGED_POLICY.resolve()
    assert not PACKAGED_POLICY.is_symlink()
    assert PROJECT_POLICY.read_bytes() == PACKAGED_POLICY.read_bytes()


def test_activation_file_hands_over_to_the_systemd_unit() -> None:
    fields = dict(line.split("=", 1) for line in ACTIVATION.read_text().splitlines()
                  if "=" in line and not line.startswith("#"))
    assert ACTIVATION.read_text().count("[D-BUS Service]") == 1
    assert fields == {"Name": "org.vfiod1", "Exec": "@bindir@/vfiod", "User": "root",
                      "SystemdService": "vfiod.service"}


def test_polkit_action_asks_active_admins_and_refuses_others() -> None:
    root = ET.parse(POLKIT).getroot()
    actions = {a.get("id"): a for a in root.iter("action")}
    assert list(actions) == ["org.vfiod1.manage"]
    defaults = actions["org.vfiod1.manage"].find("defaults")
    assert defaults is not None
    assert {d.tag: d.text for d in defaults} == {
        "allow_any": "no", "allow_inactive": "no", "allow_active": "auth_admin_keep"}


# -- the policy on a real dbus-daemon ----------------------------------------------------


# A stand-in for vfiod owning its name: Manager.Status/Bind, and one interface the
# policy does not open.
_SERVICE = textwrap.dedent('''
    import asyncio, sys
    from dbus_fast.aio import MessageBus
    from dbus_fast.service import ServiceInterface, method

    class Manager(ServiceInterface):
        def __init__(self):
            super().__init__("org.vfiod1.Manager")
        @method()
        def Status(self) -> "a(sssssis)":
            return [["0000:06:00.0", "10de:1b06", "GPU", "nvidia", "host", 31, ""]]
        @method()
        def Bind(self, device: "s", options: "a{sv}") -> "as":
            return [device]

    class Hidden(ServiceInterface):
        def __init__(self):
            super().__init__("org.vfiod1.Hidden")
        @method()
        def Poke(self) -> "s":
            return "poked"

    async def main():
        bus = await MessageBus(bus_address=sys.argv[1]).connect()
        bus.export("/org/vfiod1", Manager())
        bus.export("/org/vfiod1", Hidden())
        try:
            await bus.request_name("org.vfiod1")
        except Exception as exc:
            print("refused", type(exc).__name__, exc, flush=True)
            return
        print("owned", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
''')


class PolicyBus:
    """A private system-like bus with the project's policy (vfiod.privatebus), plus a
    stand-in service and busctl run as any uid."""

    def __init__(self) -> None:
        self.bus = PrivateBus(polkit=False)
        self.address = ""
        self.children: list[subprocess.Popen[str]] = []

    @property
    def daemon(self) -> subprocess.Popen[bytes] | None:
        return self.bus.process

    def start(self) -> None:
        self.bus.start()
        self.address = self.bus.address
        assert self.bus.dir is not None
        self.dir = self.bus.dir
        (self.dir / "service.py").write_text(_SERVICE)

    def run_service(self, uid: int = 0) -> tuple[subprocess.Popen[str], str]:
        """Start the stand-in service as *uid*; its first line: owned or refused."""
        cmd = [sys.executable, str(self.dir / "service.py"), self.address]
        if uid:
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + cmd
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.children.append(proc)
        assert proc.stdout is not None
        return proc, proc.stdout.readline().strip()

    def busctl(self, *args: str, uid: int = NOBODY) -> subprocess.CompletedProcess[str]:
        cmd = ["busctl", f"--address={self.address}", "--timeout=5", *args]
        if uid:
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.bus.stop()


needs_bus = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None or shutil.which("busctl") is None
    or shutil.which("setpriv") is None or os.geteuid() != 0,
    reason="needs dbus-daemon, busctl, setpriv and root")


@pytest.fixture
def policy_bus() -> Iterator[PolicyBus]:
    bus = PolicyBus()
    try:
        bus.start()
        yield bus
    finally:
        bus.stop()


@needs_bus
def test_dbus_daemon_starts_with_the_policy_included(policy_bus: PolicyBus) -> None:
    assert policy_bus.address.startswith("unix:path=")
    assert policy_bus.daemon is not None and policy_bus.daemon.poll() is None


@needs_bus
def test_root_may_own_org_vfiod1(policy_bus: PolicyBus) -> None:
    _, first = policy_bus.run_service(uid=0)
    assert first == "owned"


@needs_bus
def test_another_user_may_not_own_org_vfiod1(policy_bus: PolicyBus) -> None:
    _, first = policy_bus.run_service(uid=NOBODY)
    assert first.startswith("refused")
    assert "not allowed to own" in first


@needs_bus
def test_any_user_may_call_status(policy_bus: PolicyBus) -> None:
    policy_bus.run_service(uid=0)
    proc = policy_bus.busctl("call", "org.vfiod1", "/org/vfiod1", "org.vfiod1.Manager",
                             "Status")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('a(sssssis) 1 "0000:06:00.0"')


@needs_bus
def test_any_user_may_call_bind_for_the_daemon_to_authorize(policy_bus: PolicyBus) -> None:
    policy_bus.run_service(uid=0)
    proc = policy_bus.busctl("call", "org.vfiod1", "/org/vfiod1", "org.vfiod1.Manager",
                             "Bind", "sa{sv}", "0000:06:00.0", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'as 1 "0000:06:00.0"'


@needs_bus
def test_introspection_is_open_to_everyone(policy_bus: PolicyBus) -> None:
    policy_bus.run_service(uid=0)
    proc = policy_bus.busctl("introspect", "--xml-interface", "org.vfiod1", "/org/vfiod1")
    assert proc.returncode == 0, proc.stderr
    assert 'interface name="org.vfiod1.Manager"' in proc.stdout


@needs_bus
def test_an_interface_outside_the_api_is_denied_by_the_bus(policy_bus: PolicyBus) -> None:
    policy_bus.run_service(uid=0)
    proc = policy_bus.busctl("call", "org.vfiod1", "/org/vfiod1", "org.vfiod1.Hidden",
                             "Poke")
    assert proc.returncode != 0
    assert "Access denied" in proc.stderr or "AccessDenied" in proc.stderr


# -- make install ------------------------------------------------------------------------

def _make_install(destdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "install", f"DESTDIR={destdir}", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


needs_make = pytest.mark.skipif(
    shutil.which("make") is None or not Path("/usr/bin/python3").exists(),
    reason="needs make and /usr/bin/python3 with pip")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    destdir = tmp_path_factory.mktemp("destdir")
    proc = _make_install(destdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return destdir


@needs_make
def test_install_puts_every_file_where_its_tool_looks(installed: Path) -> None:
    expected = [
        "usr/local/bin/vfiod", "usr/local/bin/vfioctl",
        "usr/local/lib/vfiod/vfiod/__init__.py", "usr/local/lib/vfiod/vfiod/daemon",
        "lib/systemd/system/vfiod.service",
        "usr/share/dbus-1/system.d/org.vfiod1.conf",
        "usr/share/dbus-1/system-services/org.vfiod1.service",
        "usr/share/polkit-1/actions/org.vfiod1.policy",
        "usr/share/initramfs-tools/hooks/vfiod",
        "usr/share/initramfs-tools/scripts/init-top/00-vfiod",
        "usr/lib/dracut/modules.d/90vfiod/module-setup.sh",
        "usr/lib/dracut/modules.d/90vfiod/vfiod-pre-udev.sh",
        "usr/lib/initcpio/install/vfiod", "usr/lib/initcpio/hooks/vfiod",
        "usr/local/share/vfiod/initramfs/vfiod-shim.sh.in",
        "etc/vfiod/vfiod.toml",
    ]
    missing = [p for p in expected if not (installed / p).exists()]
    assert missing == []


@needs_make
def test_install_substitutes_the_installed_bindir(installed: Path) -> None:
    unit = (installed / "lib/systemd/system/vfiod.service").read_text()
    activation = (installed / "usr/share/dbus-1/system-services/org.vfiod1.service").read_text()
    assert "ExecStart=/usr/local/bin/vfiod\n" in unit
    assert "Exec=/usr/local/bin/vfiod\n" in activation
    exec_lines = [line for line in (unit + activation).splitlines() if line.startswith("Exec")]
    assert exec_lines and not any("@bindir@" in line for line in exec_lines)


@needs_make
@pytest.mark.parametrize(("source", "installed_as"), [
    (UNIT, "lib/systemd/system/vfiod.service"),
    (ACTIVATION, "usr/share/dbus-1/system-services/org.vfiod1.service"),
])
def test_install_leaves_every_line_but_exec_lines_as_written(
        installed: Path, source: Path, installed_as: str) -> None:
    written = source.read_text().splitlines()
    result = (installed / installed_as).read_text().splitlines()
    assert len(result) == len(written)
    changed = [old for old, new in zip(written, result) if old != new]
    assert changed and all(old.startswith("Exec") for old in changed)
    # The comments that explain @bindir@ still say @bindir@.
    assert any(line.startswith("#") and "@bindir@" in line for line in result)


@needs_make
def test_install_puts_the_packages_own_bus_policy_in_system_d(installed: Path) -> None:
    system_d = installed / "usr/share/dbus-1/system.d/org.vfiod1.conf"
    packaged = installed / "usr/local/lib/vfiod/vfiod/data/org.vfiod1.conf"
    assert system_d.read_bytes() == packaged.read_bytes() == BUS_POLICY.read_bytes()


@needs_make
def test_installed_commands_run_the_private_package(installed: Path) -> None:
    wrapper = (installed / "usr/local/bin/vfioctl").read_text().splitlines()
    assert wrapper[0] == "#!/usr/bin/python3 -I"
    assert 'sys.path.insert(0, "/usr/local/lib/vfiod")' in wrapper
    assert os.access(installed / "usr/local/bin/vfioctl", os.X_OK)
    # The staged package is complete: it imports, and finds its shim template.
    staged = installed / "usr/local/lib/vfiod"
    proc = subprocess.run(
        [sys.executable, "-I", "-c",
         f"import sys; sys.path.insert(0, {str(staged)!r}); import vfiod.initramfs as i; "
         "print(i.__file__); print(i.template_dir())"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    module, template = proc.stdout.split()
    assert module.startswith(str(staged))
    assert template == str(installed / "usr/local/share/vfiod/initramfs")


@needs_make
def test_install_keeps_an_existing_config(tmp_path: Path) -> None:
    mine = tmp_path / "etc" / "vfiod" / "vfiod.toml"
    mine.parent.mkdir(parents=True)
    mine.write_text('[[device]]\nmatch = "06:00.0"\n')
    proc = _make_install(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mine.read_text() == '[[device]]\nmatch = "06:00.0"\n'


@needs_make
def test_install_honours_prefix(tmp_path: Path) -> None:
    proc = _make_install(tmp_path, "PREFIX=/usr")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "usr/bin/vfiod").exists()
    assert (tmp_path / "usr/lib/vfiod/vfiod/__init__.py").exists()
    assert "ExecStart=/usr/bin/vfiod\n" in (tmp_path / "lib/systemd/system/vfiod.service"
                                           ).read_text()


@needs_make
def test_install_compiles_every_module_for_the_installed_path(installed: Path) -> None:
    tag = subprocess.run(["/usr/bin/python3", "-c",
                          "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    package = installed / "usr/local/lib/vfiod"
    sources = sorted(package.rglob("*.py"))
    assert sources
    missing = [str(s) for s in sources
               if not (s.parent / "__pycache__" / f"{s.stem}.{tag}.pyc").is_file()]
    assert missing == []
    # Tracebacks name the installed file, not the DESTDIR staging copy.
    pyc = package / "vfiod" / "__pycache__" / f"__init__.{tag}.pyc"
    code = marshal.loads(pyc.read_bytes()[16:])
    assert code.co_filename == "/usr/local/lib/vfiod/vfiod/__init__.py"


def _make_uninstall(destdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "uninstall", f"DESTDIR={destdir}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@needs_make
def test_uninstall_leaves_only_the_config(tmp_path: Path) -> None:
    assert _make_install(tmp_path).returncode == 0
    shim = tmp_path / "var/lib/vfiod/early-boot.sh"
    shim.parent.mkdir(parents=True)
    shim.write_text("#!/bin/sh\n")
    proc = _make_uninstall(tmp_path)
    assert proc.returncode == 0, proc.stderr
    left = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if not f.is_dir())
    assert left == ["etc/vfiod/vfiod.toml"]


@needs_make
def test_uninstall_says_how_to_take_the_shim_out_of_the_initramfs(tmp_path: Path) -> None:
    assert _make_install(tmp_path).returncode == 0
    tool = tmp_path / "usr/sbin/update-initramfs"
    tool.parent.mkdir(parents=True)
    tool.write_text("")
    proc = _make_uninstall(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "still has the shim" in proc.stdout
    assert "update-initramfs -u -k all" in proc.stdout


@needs_make
def test_uninstall_refuses_to_rebuild_this_machines_initramfs_for_a_destdir(
        tmp_path: Path) -> None:
    proc = subprocess.run(["make", "-s", "uninstall", f"DESTDIR={tmp_path}",
                           "REBUILD_INITRAMFS=1"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "not with DESTDIR" in proc.stderr


def test_makefile_uninstall_uses_destdir_everywhere() -> None:
    text = (REPO / "Makefile").read_text()
    recipe = text.split("\nuninstall:\n", 1)[1].split("\n\n", 1)[0]
    removals = [line for line in recipe.splitlines() if line.lstrip().startswith("rm ")]
    assert len(removals) == 2
    for line in removals:
        assert "'$(DESTDIR)$(" in line, line


def test_makefile_install_uses_destdir_everywhere() -> None:
    text = (REPO / "Makefile").read_text()
    recipe = text.split("\ninstall:\n", 1)[1].split("\n\n", 1)[0]
    for line in recipe.splitlines():
        for target in re.findall(r"'([^']*)'", line):
            if target.startswith("$("):
                assert target.startswith("$(DESTDIR)"), line
