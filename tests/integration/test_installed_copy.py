"""An installed vfiod works without the checkout: `make install` into a temp prefix, then
its vfiod, vfioctl and demo run from there (the simulated host and the demo ship)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vfiod.privatebus import PrivateBus, start_vfiod, stop_vfiod

REPO = Path(__file__).resolve().parents[2]
GPU = "0000:06:00.0"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Installed:
    """Where `make install` put things under a temp prefix."""

    prefix: Path

    @property
    def bindir(self) -> Path:
        """The vfiod and vfioctl wrappers."""
        return self.prefix / "bin"

    @property
    def pkglibdir(self) -> Path:
        """The private directory holding the vfiod package."""
        return self.prefix / "lib" / "vfiod"

    def make_variables(self) -> list[str]:
        """`make install` variables that keep every file under the prefix."""
        p = self.prefix
        return [f"PREFIX={p}", f"BINDIR={self.bindir}", f"PKGLIBDIR={self.pkglibdir}",
                f"DATADIR={p}/share/vfiod", f"SYSCONFDIR={p}/etc",
                f"SYSTEMDUNITDIR={p}/lib/systemd/system",
                f"DBUSSYSTEMDIR={p}/share/dbus-1/system.d",
                f"DBUSSERVICEDIR={p}/share/dbus-1/system-services",
                f"POLKITACTIONDIR={p}/share/polkit-1/actions",
                f"INITRAMFSTOOLSDIR={p}/share/initramfs-tools",
                f"DRACUTMODULESDIR={p}/lib/dracut/modules.d", f"INITCPIODIR={p}/lib/initcpio",
                # Never this machine's /var/lib/vfiod (make uninstall removes it).
                f"STATEDIR={p}/var/lib/vfiod",
                # This Python has vfiod's dependencies and builds offline.
                f"INSTALL_PYTHON={sys.executable}"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """vfiod installed with `make install` into a fresh prefix (no DESTDIR)."""
    where = Installed(tmp_path_factory.mktemp("prefix"))
    proc = subprocess.run(["make", "-s", "install", *where.make_variables()], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return where


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A short, empty directory outside the checkout (the demo's cwd and TMPDIR: its bus
    socket lives there, and a unix socket path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vi-", dir="/tmp"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def installed_env(installed: Installed, tmp: Path) -> dict[str, str]:
    """The environment of a user who runs the installed package with this Python."""
    env = {**os.environ, "PYTHONPATH": str(installed.pkglibdir), "TMPDIR": str(tmp)}
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    return env


def test_installed_package_carries_its_data_files(installed: Installed, elsewhere: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import vfiod.demo, vfiod.privatebus as b, vfiod.sim.pci_ids_subset as i; "
         "print(vfiod.demo.__file__); print(b.PROJECT_POLICY); print(i.SHIPPED_PCI_IDS)"],
        env=installed_env(installed, elsewhere), cwd=elsewhere, capture_output=True,
        text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    package = installed.pkglibdir / "vfiod"
    demo, policy, pci_ids = (Path(line) for line in proc.stdout.split())
    assert demo == package / "demo.py"
    assert policy == package / "data" / "org.vfiod1.conf" and policy.is_file()
    assert pci_ids == package / "sim" / "data" / "pci.ids" and pci_ids.is_file()


def test_installed_vfiod_simulates_seed_x99_and_answers_status(
        installed: Installed, private_bus: PrivateBus, tmp_path: Path) -> None:
    (tmp_path / "vfiod.toml").write_text("")
    proc = start_vfiod(private_bus, tmp_path / "sim", "seed-x99", tmp_path / "state",
                       tmp_path / "vfiod.toml", log=tmp_path / "vfiod.log",
                       program=[str(installed.bindir / "vfiod")])
    try:
        # The installed wrapper runs (as `python -I BINDIR/vfiod --simulate ...`).
        assert bytes(installed.bindir / "vfiod") in \
            Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        status = subprocess.run(
            ["busctl", f"--address={private_bus.address}", "--json=short", "call",
             "org.vfiod1", "/org/vfiod1", "org.vfiod1.Manager", "Status"],
            capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        rows = {row[0]: row for row in json.loads(status.stdout)["data"][0]}
        assert rows[GPU][1:5] == ["10de:1b06", rows[GPU][2], "nvidia", "host"]
        assert rows[GPU][5] == 31
        # The installed vfioctl reads the same daemon.
        ctl = subprocess.run([str(installed.bindir / "vfioctl"), "--address",
                              private_bus.address, "status", GPU, "--json"],
                             capture_output=True, text=True, timeout=60)
        assert ctl.returncode == 0, ctl.stderr
        assert GPU in ctl.stdout and "nvidia" in ctl.stdout
    finally:
        assert stop_vfiod(proc) == 0


def test_installed_demo_runs_to_completion_outside_the_checkout(
        installed: Installed, elsewhere: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "vfiod.demo"],
                          env=installed_env(installed, elsewhere), cwd=elsewhere,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("demo: every step did what it shows")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert list(elsewhere.iterdir()) == []  # the demo cleaned up after itself


def test_installed_vfioctl_installs_a_libvirt_hook_for_the_system_python(
        installed: Installed, elsewhere: Path) -> None:
    # This install's INSTALL_PYTHON is the test venv's: the hook must not inherit it.
    proc = subprocess.run([str(installed.bindir / "vfioctl"), "libvirt-hook", "install",
                           "--destdir", str(elsewhere)],
                          capture_output=True, text=True, timeout=60, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    hook = elsewhere / "etc/libvirt/hooks/qemu.d/vfiod"
    assert hook.read_text().splitlines()[0] == "#!/usr/bin/python3 -I"
    # It runs there, outside any virtualenv: an operation it ignores exits 0 at once.
    ran = subprocess.run([str(hook), "Windows", "migrate", "begin", "-"], input="<domain/>",
                         capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin"})
    assert (ran.returncode, ran.stderr) == (0, "")


def test_installed_applet_has_its_wrapper_and_an_autostart_file_naming_it(
        installed: Installed, elsewhere: Path) -> None:
    wrapper = installed.bindir / "vfiod-applet"
    help_text = subprocess.run([str(wrapper), "--help"], capture_output=True, text=True,
                               timeout=60, cwd=elsewhere)
    assert help_text.returncode == 0, help_text.stderr
    assert help_text.stdout.startswith("usage: vfiod-applet")
    autostart = installed.prefix / "etc" / "xdg" / "autostart" / "vfiod-applet.desktop"
    assert f"Exec={wrapper}\n" in autostart.read_text()


def test_uninstall_removes_all_but_the_config_and_rebuilds_the_initramfs_when_asked(
        tmp_path: Path) -> None:
    where = Installed(tmp_path / "prefix")
    install = subprocess.run(["make", "-s", "install", *where.make_variables()], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    # What `vfioctl initramfs install` leaves: the rendered shim in the state dir.
    shim = where.prefix / "var/lib/vfiod/early-boot.sh"
    shim.parent.mkdir(parents=True)
    shim.write_text("#!/bin/sh\n")
    rebuilt = tmp_path / "rebuilt"
    proc = subprocess.run(["make", "-s", "uninstall", *where.make_variables(),
                           "REBUILD_INITRAMFS=1", f"INITRAMFS_REBUILD=touch {rebuilt}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = sorted(str(f.relative_to(where.prefix)) for f in where.prefix.rglob("*")
                  if not f.is_dir())
    assert left == ["etc/vfiod/vfiod.toml"]
    assert rebuilt.exists()
    assert f"taking the shim out of the initramfs: touch {rebuilt}" in proc.stdout
