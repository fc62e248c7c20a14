"""The distribution tier's checks, run inside the booted Debian guest by
vfiod-distro-checks.service: ``python3 checks.py`` (Debian's python3, stdlib only).

Refuses to run unless the kernel command line has the test-guest marker: it binds,
resets, uninstalls and powers off, which must never happen on a host. Which boot this is
comes from ``vfiod.distroboot=N`` on the same line. Each check writes its evidence (every
command it ran, with output and exit code) to ``RESULTS/bootN/<check>.log``, prints one
``vfiod-distro: PASS|FAIL name`` line to the console, and the outcomes go to
``RESULTS/bootN/results.json``, which the host reads from the disk image afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.distro.machine import address  # noqa: E402
from tests.vm.marker import GUEST_MARKER, in_test_guest  # noqa: E402

RESULTS = Path("/var/log/vfiod-distro")
#: The guest's PCI layout, from the table tests/distro/machine.py builds the machine from.
VGA, HDA = address("vga"), address("hda")
BOOT_NIC = address("boot_nic")  # boot = "vfio": the shim claims it
NIC = address("nic")  # bound at run time only
FLR_GPU = address("flr_gpu")  # virtio-gpu-pci: the emulated device with FLR
#: At or under this `systemd-analyze security` exposure (issue 12).
MAX_EXPOSURE = 2.5
ACTION = "org.vfiod1.manage"
#: vfioctl's exit code for org.freedesktop.DBus.Error.AccessDenied (vfiod.errors).
ACCESS_DENIED = 8
RULES = Path("/etc/polkit-1/rules.d")


class CheckFailed(AssertionError):
    """A check's expectation did not hold; the message says what was seen."""


class Evidence:
    """One check's log: the commands it ran and what they printed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "w", encoding="utf-8")

    def note(self, text: str) -> None:
        """A line of commentary."""
        self.file.write(text.rstrip("\n") + "\n")
        self.file.flush()

    def run(self, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a command, log it with its output and exit code, return it."""
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            self.note(f"$ {' '.join(argv)}\n(timed out after {timeout:g} s)")
            raise CheckFailed(f"{' '.join(argv)} timed out after {timeout:g} s") from None
        self.note(f"$ {' '.join(argv)}   # exit {proc.returncode}, "
                  f"{time.monotonic() - started:.1f} s")
        for stream in (proc.stdout, proc.stderr):
            if stream.strip():
                self.note(stream)
        return proc

    def ok(self, argv: list[str], timeout: float = 300) -> str:
        """Run a command that must succeed; its standard output."""
        proc = self.run(argv, timeout)
        if proc.returncode != 0:
            raise CheckFailed(f"{' '.join(argv)} exited {proc.returncode}: "
                              f"{(proc.stderr or proc.stdout).strip()[-300:]}")
        return proc.stdout

    def close(self) -> None:
        self.file.close()


def expect(condition: bool, message: str) -> None:
    """Fail the check with *message* unless *condition*."""
    if not condition:
        raise CheckFailed(message)


def driver(address: str) -> str:
    """The driver bound to a PCI function now ("" for none)."""
    link = Path("/sys/bus/pci/devices") / address / "driver"
    return os.path.basename(os.readlink(link)) if link.exists() else ""


def wait_for(what: str, predicate: Callable[[], bool], timeout: float,
             ev: Evidence) -> float:
    """Poll until *predicate* holds; the seconds it took, or CheckFailed after *timeout*."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise CheckFailed(f"{what}: not within {timeout:g} s")
        time.sleep(0.5)
    took = time.monotonic() - started
    ev.note(f"# {what}: after {took:.1f} s")
    return took


def show(ev: Evidence, unit: str, *props: str) -> dict[str, str]:
    """``systemctl show`` properties of a unit."""
    out = ev.ok(["systemctl", "show", unit, *(f"--property={p}" for p in props)])
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def active(ev: Evidence, unit: str) -> str:
    """``systemctl is-active``'s word for a unit."""
    return ev.run(["systemctl", "is-active", unit]).stdout.strip()


def as_user(user: str, *argv: str) -> list[str]:
    """A command run as an unprivileged user, without a session (as a script would)."""
    return ["runuser", "-u", user, "--", *argv]


def kernel_log(ev: Evidence) -> str:
    """This boot's kernel messages, saved with the evidence."""
    log = ev.ok(["journalctl", "-k", "-b", "--no-pager", "-q", "-o", "short-monotonic"])
    (ev.path.parent / "kernel.log").write_text(log)
    return log


# -- boot 1 -------------------------------------------------------------------------


def check_boot_claim(ev: Evidence) -> str:
    """The NIC with boot = "vfio" is on vfio-pci and e1000e never probed it."""
    return _boot_claim(ev)


def _boot_claim(ev: Evidence) -> str:
    expect(driver(BOOT_NIC) == "vfio-pci",
           f"{BOOT_NIC} is on {driver(BOOT_NIC) or 'no driver'}, not vfio-pci")
    log = kernel_log(ev)
    claimed = [line for line in log.splitlines() if "vfiod-shim" in line]
    ev.note("# the shim's lines:\n" + "\n".join(claimed))
    expect(any(BOOT_NIC in line and "claimed" in line for line in claimed),
           f"no 'vfiod-shim: claimed ... {BOOT_NIC}' in the kernel log")
    probed = [line for line in log.splitlines() if f"e1000e {BOOT_NIC}" in line]
    expect(not probed, f"e1000e probed {BOOT_NIC}: {probed[:2]}")
    other = [line for line in log.splitlines() if f"e1000e {NIC}" in line]
    expect(bool(other), f"e1000e never probed the other NIC {NIC} either: "
                        "the probe lines this check looks for may have changed")
    return f"{BOOT_NIC} on vfio-pci; e1000e probed only {NIC}"


def check_service_ready(ev: Evidence) -> str:
    """vfiod.service, started at boot, is active and said READY (Type=notify)."""
    props = show(ev, "vfiod.service", "ActiveState", "SubState", "Type", "MainPID",
                 "UnitFileState", "StatusText")
    expect(props.get("Type") == "notify", f"Type={props.get('Type')}")
    expect(props.get("UnitFileState") == "enabled", f"UnitFileState={props.get('UnitFileState')}")
    expect((props.get("ActiveState"), props.get("SubState")) == ("active", "running"),
           f"ActiveState={props.get('ActiveState')} SubState={props.get('SubState')}")
    version = ev.ok(["busctl", "get-property", "org.vfiod1", "/org/vfiod1",
                     "org.vfiod1.Manager", "Version"]).strip()
    return f"active (running) after READY, pid {props.get('MainPID')}, Version {version}"


def check_security_exposure(ev: Evidence) -> str:
    """`systemd-analyze security vfiod.service` on the live system: at or under 2.5."""
    out = ev.ok(["systemd-analyze", "security", "--no-pager", "vfiod.service"])
    match = re.search(r"Overall exposure level for vfiod\.service:\s*([0-9.]+)\s*(\S+)", out)
    expect(match is not None, "no overall exposure level in the output")
    assert match is not None
    level = float(match.group(1))
    expect(level <= MAX_EXPOSURE, f"exposure {level} {match.group(2)} > {MAX_EXPOSURE}")
    return f"{level} {match.group(2)}"


def check_bind_unbind_nic(ev: Evidence) -> str:
    """vfioctl bind/unbind of the second NIC through the installed unit."""
    expect(driver(NIC) == "e1000e", f"{NIC} starts on {driver(NIC)!r}")
    ev.ok(["vfioctl", "bind", NIC])
    expect(driver(NIC) == "vfio-pci", f"after bind {NIC} is on {driver(NIC)!r}")
    ev.ok(["vfioctl", "unbind", NIC])
    expect(driver(NIC) == "e1000e", f"after unbind {NIC} is on {driver(NIC)!r}")
    return f"{NIC}: e1000e -> vfio-pci -> e1000e"


def check_reset_flr(ev: Evidence) -> str:
    """vfioctl reset of the virtio GPU: the kernel's FLR, healthy afterwards."""
    out = ev.ok(["vfioctl", "reset", FLR_GPU])
    expect("reset (flr)" in out, f"not an FLR: {out.strip()}")
    return out.strip()


def check_hot_reset_slot(ev: Evidence) -> str:
    """The VGA+audio slot on vfio-pci, reset by VFIO's hot reset (needs /dev/vfio)."""
    ev.ok(["vfioctl", "bind", "--force", VGA])  # --force: the boot VGA carries the console
    expect(driver(VGA) == driver(HDA) == "vfio-pci",
           f"after bind: VGA on {driver(VGA)!r}, audio on {driver(HDA)!r}")
    try:
        out = ev.ok(["vfioctl", "reset", VGA])
        expect("reset (bus)" in out, f"not the bus hot reset: {out.strip()}")
    finally:
        ev.run(["vfioctl", "unbind", VGA])
    expect(driver(VGA) == "bochs-drm" and driver(HDA) == "snd_hda_intel",
           f"after unbind: VGA on {driver(VGA)!r}, audio on {driver(HDA)!r}")
    return out.strip()


def check_dbus_activation(ev: Evidence) -> str:
    """Stopped, vfiod is started by the bus on the first call."""
    ev.ok(["systemctl", "stop", "vfiod.service"])
    expect(active(ev, "vfiod.service") == "inactive", "vfiod did not stop")
    started = time.monotonic()
    ev.ok(["busctl", "call", "org.vfiod1", "/org/vfiod1", "org.vfiod1.Manager", "Status"],
          timeout=120)
    took = time.monotonic() - started
    expect(active(ev, "vfiod.service") == "active", "vfiod is not active after the call")
    return f"started by the bus; the first call answered after {took:.1f} s"


def _status_of(ev: Evidence, address: str, user: str = "") -> dict[str, object]:
    argv = ["vfioctl", "status", address, "--json"]
    out = ev.ok(as_user(user, *argv) if user else argv, timeout=120)
    return json.loads(out)


def check_watchdog_restart(ev: Evidence) -> str:
    """A SIGSTOPped vfiod is restarted by the watchdog; a runtime bind survives it."""
    ev.ok(["vfioctl", "bind", NIC])
    before = _status_of(ev, NIC)
    pid = show(ev, "vfiod.service", "MainPID")["MainPID"]
    expect(pid not in ("", "0"), "vfiod has no main pid")
    ev.ok(["kill", "-STOP", pid])
    took = wait_for("a new vfiod main process",
                    lambda: show(ev, "vfiod.service", "MainPID")["MainPID"] not in
                    ("0", "", pid) and active(ev, "vfiod.service") == "active", 180, ev)
    props = show(ev, "vfiod.service", "NRestarts", "MainPID", "Result")
    journal = ev.ok(["journalctl", "-b", "-u", "vfiod.service", "--no-pager", "-q"])
    expect("Watchdog timeout" in journal, "no 'Watchdog timeout' for vfiod in the journal")
    after = _status_of(ev, NIC)
    expect(driver(NIC) == "vfio-pci", f"{NIC} is on {driver(NIC)!r} after the restart")
    for key in ("driver", "host_driver", "state"):
        expect(before.get(key) == after.get(key),
               f"{key}: {before.get(key)!r} before, {after.get(key)!r} after the restart")
    return (f"pid {pid} stopped, pid {props.get('MainPID')} serving {took:.0f} s later "
            f"(NRestarts={props.get('NRestarts')}); {NIC} still {after.get('state')}, "
            f"host driver {after.get('host_driver')}")


@contextlib.contextmanager
def polkit_rule(ev: Evidence, name: str, condition: str) -> Iterator[Path]:
    """A rules.d file allowing vfiod's action when *condition* holds, noted in the
    evidence, removed afterwards (also when the check fails)."""
    path = RULES / f"50-vfiod-{name}.rules"
    path.write_text(
        "polkit.addRule(function(action, subject) {\n"
        f'    if (action.id == "{ACTION}" && {condition}) {{\n'
        "        return polkit.Result.YES;\n"
        "    }\n"
        "});\n")
    try:
        ev.note(f"# {path}:\n{path.read_text()}")
        yield path
    finally:
        path.unlink()


def _stop_polkit(ev: Evidence) -> None:
    ev.run(["systemctl", "stop", "polkit.service"])
    expect(active(ev, "polkit.service") != "active", "polkitd still runs")


def _bind_unbind_as(ev: Evidence, user: str) -> None:
    ev.ok(as_user(user, "vfioctl", "bind", FLR_GPU), timeout=120)
    expect(driver(FLR_GPU) == "vfio-pci", f"{user}'s bind left {FLR_GPU} on {driver(FLR_GPU)!r}")
    ev.ok(as_user(user, "vfioctl", "unbind", FLR_GPU), timeout=120)
    expect(driver(FLR_GPU) == "virtio-pci",
           f"{user}'s unbind left {FLR_GPU} on {driver(FLR_GPU)!r}")


def check_polkit_denies_without_rule(ev: Evidence) -> str:
    """polkitd not running: an unprivileged bind is denied (the bus starts polkitd)."""
    for old in RULES.glob("50-vfiod-*.rules"):
        old.unlink()
    _stop_polkit(ev)
    proc = ev.run(as_user("alice", "vfioctl", "bind", FLR_GPU), timeout=120)
    expect(proc.returncode == ACCESS_DENIED,
           f"alice's bind exited {proc.returncode}, not {ACCESS_DENIED} (AccessDenied)")
    expect(driver(FLR_GPU) == "virtio-pci", f"{FLR_GPU} moved to {driver(FLR_GPU)!r}")
    expect(active(ev, "polkit.service") == "active",
           "polkitd was not started by the call: vfiod did not ask it")
    return f"alice denied (exit {ACCESS_DENIED}); polkitd activated by the call"


def check_polkit_user_rule(ev: Evidence) -> str:
    """polkitd not running: a rule naming the user allows her bind and unbind."""
    _stop_polkit(ev)
    with polkit_rule(ev, "alice", 'subject.user == "alice"'):
        _bind_unbind_as(ev, "alice")
    return "alice, named by a rule, bound and unbound the virtio GPU"


def check_polkit_group_rule(ev: Evidence) -> str:
    """polkitd not running: a rule naming a group allows its member, not others."""
    _stop_polkit(ev)
    with polkit_rule(ev, "group", 'subject.isInGroup("vfiodops")'):
        _bind_unbind_as(ev, "bob")
        proc = ev.run(as_user("alice", "vfioctl", "bind", FLR_GPU), timeout=120)
        expect(proc.returncode == ACCESS_DENIED,
               f"alice (not in vfiodops) exited {proc.returncode}, not {ACCESS_DENIED}")
    return "bob (group vfiodops) bound and unbound; alice still denied"


def check_status_unprivileged(ev: Evidence) -> str:
    """`vfioctl status` as an unprivileged user."""
    out = ev.ok(as_user("alice", "vfioctl", "status"), timeout=120)
    expect(BOOT_NIC in out and "vfio-pci" in out, "the boot NIC is not listed on vfio-pci")
    return f"{len(out.splitlines())} lines, the boot NIC on vfio-pci"


def check_doctor_live(ev: Evidence) -> str:
    """`vfioctl doctor`: IOMMU on, interrupt remapping, the shim in this initramfs."""
    proc = ev.run(["vfioctl", "doctor", "--json"], timeout=180)
    checks = {c["id"]: c for c in json.loads(proc.stdout)}
    ev.run(["vfioctl", "doctor"], timeout=180)
    failed = [f"{c['id']}: {c['summary']}" for c in checks.values() if c["status"] == "fail"]
    expect(not failed, f"failures: {failed}")
    for id_ in ("iommu", "intremap", "shim"):
        expect(checks.get(id_, {}).get("status") == "ok",
               f"{id_}: {checks.get(id_, {}).get('status')} {checks.get(id_, {}).get('summary')}")
    release = os.uname().release
    expect(f"initrd.img-{release}" in checks["shim"]["summary"],
           f"the shim check did not look in this kernel's initramfs: {checks['shim']['summary']}")
    expect(proc.returncode == 0, f"doctor exited {proc.returncode}")
    return "; ".join(checks[i]["summary"] for i in ("iommu", "intremap", "shim"))


def check_journal_no_error(ev: Evidence) -> str:
    """No error from vfiod itself in its journal this boot (systemd's own watchdog
    message about the stopped daemon is the watchdog check's evidence, not an error)."""
    out = ev.ok(["journalctl", "-b", "-u", "vfiod.service", "-p", "err", "-o", "json",
                 "--no-pager", "-q"])
    errors = []
    for line in out.splitlines():
        entry = json.loads(line)
        if entry.get("_PID") != "1":
            errors.append(f"{entry.get('SYSLOG_IDENTIFIER')}: {entry.get('MESSAGE')}")
    ev.ok(["journalctl", "-b", "-u", "vfiod.service", "--no-pager", "-q"])
    expect(not errors, f"{len(errors)} errors: {errors[:3]}")
    return "none"


# -- boot 2 -------------------------------------------------------------------------


def check_reboot_boot_claim_back(ev: Evidence) -> str:
    """After the reboot the boot-claimed NIC is on vfio-pci again, never probed."""
    return _boot_claim(ev)


def check_reboot_runtime_bind_gone(ev: Evidence) -> str:
    """The NIC bound at run time before the reboot is back on e1000e."""
    expect(driver(NIC) == "e1000e", f"{NIC} is on {driver(NIC)!r} after the reboot")
    wait_for("vfiod active", lambda: active(ev, "vfiod.service") == "active", 120, ev)
    status = _status_of(ev, NIC)
    expect(status.get("state") == "host", f"vfiod says {status.get('state')}")
    return f"{NIC} on e1000e, state host"


#: What `make install` put there (PREFIX=/usr/local) and `make uninstall` must take away.
INSTALLED = (
    "/usr/local/bin/vfiod", "/usr/local/bin/vfioctl", "/usr/local/lib/vfiod",
    "/usr/local/share/vfiod", "/lib/systemd/system/vfiod.service",
    "/usr/share/dbus-1/system.d/org.vfiod1.conf",
    "/usr/share/dbus-1/system-services/org.vfiod1.service",
    "/usr/share/polkit-1/actions/org.vfiod1.policy",
    "/usr/share/initramfs-tools/hooks/vfiod",
    "/usr/share/initramfs-tools/scripts/init-top/00-vfiod",
    "/usr/lib/dracut/modules.d/90vfiod", "/var/lib/vfiod",
)
#: What may still be named vfiod afterwards: the config, the checkout, this tier's own.
ALLOWED_LEFT = ("/etc/vfiod", "/srv/vfiod", str(RESULTS),
                "/etc/systemd/system/vfiod-distro-checks.service",
                "/etc/systemd/system/multi-user.target.wants/vfiod-distro-checks.service")
#: initramfs-tools with this machine's modules only: TCG builds that in a few minutes;
#: with Debian's default (`most`) it took a quarter of an hour.
MODULES_DEP = Path("/etc/initramfs-tools/conf.d/tier-modules-dep")


def check_uninstall(ev: Evidence) -> str:
    """`make uninstall REBUILD_INITRAMFS=1`: nothing of vfiod left but the config."""
    for path in INSTALLED:
        expect(os.path.lexists(path), f"{path} was not installed in the first place")
    ev.ok(["systemctl", "disable", "--now", "vfiod.service"])
    MODULES_DEP.write_text("MODULES=dep\n")
    started = time.monotonic()
    ev.ok(["make", "-C", "/srv/vfiod", "uninstall", "REBUILD_INITRAMFS=1"], timeout=1500)
    took = time.monotonic() - started
    left = [p for p in INSTALLED if os.path.lexists(p)]
    expect(not left, f"still there: {left}")
    expect(Path("/etc/vfiod/vfiod.toml").is_file(), "the config went too")
    found = ev.ok(["find", "/", "-xdev", "-iname", "*vfiod*", "-not", "-path", "/proc/*"])
    stray = [p for p in found.splitlines()
             if not any(p == a or p.startswith(a + "/") for a in ALLOWED_LEFT)]
    expect(not stray, f"left behind: {stray[:10]}")
    return f"removed (with the initramfs rebuild: {took:.0f} s); /etc/vfiod kept"


def check_initramfs_without_shim(ev: Evidence) -> str:
    """The initramfs the next boot would use no longer has the shim."""
    image = f"/boot/initrd.img-{os.uname().release}"
    listing = ev.ok(["lsinitramfs", image], timeout=600)
    (ev.path.parent / "initramfs-after-uninstall.txt").write_text(listing)
    shim = [line for line in listing.splitlines() if "vfiod" in line]
    expect(not shim, f"{image} still has {shim[:5]}")
    booted = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    expect(os.stat(image).st_mtime > booted, f"{image} was not rebuilt this boot")
    return f"{image}: {len(listing.splitlines())} entries, none of vfiod"


# -- boot 3 (dracut) ----------------------------------------------------------------


def check_claimed_by_dracut_hook(ev: Evidence) -> str:
    """The shim's claim came from dracut's pre-udev hook (module 90vfiod), in an image
    without initramfs-tools."""
    expect(not Path("/usr/sbin/update-initramfs").exists(),
           "update-initramfs is installed: this image's initramfs may not be dracut's")
    journal = ev.ok(["journalctl", "-b", "--no-pager", "-q", "-o", "short-monotonic",
                     "-t", "dracut-pre-udev"])
    ev.note("# dracut-pre-udev's lines:\n" + journal)
    claimed = [line for line in journal.splitlines()
               if "vfiod-shim: claimed" in line and BOOT_NIC in line]
    expect(bool(claimed), f"no 'vfiod-shim: claimed ... {BOOT_NIC}' from dracut-pre-udev "
                          "in this boot's journal")
    return claimed[0].split("]", 1)[-1].strip()


BOOTS: dict[int, tuple[Callable[[Evidence], str], ...]] = {
    1: (check_boot_claim, check_service_ready, check_security_exposure,
        check_bind_unbind_nic, check_reset_flr, check_hot_reset_slot,
        check_status_unprivileged, check_polkit_denies_without_rule,
        check_polkit_user_rule, check_polkit_group_rule, check_doctor_live,
        check_journal_no_error, check_dbus_activation, check_watchdog_restart),
    2: (check_reboot_boot_claim_back, check_reboot_runtime_bind_gone, check_uninstall,
        check_initramfs_without_shim),
    # The same product in a second image whose initramfs dracut built: the shim's
    # dracut module (initramfs/dracut/90vfiod) on a real boot, and the doctor finding it.
    3: (check_boot_claim, check_claimed_by_dracut_hook, check_service_ready,
        check_doctor_live),
}
#: How each boot's checks are reported (``LABEL::check``): boot 3 is dracut's.
BOOT_LABELS: dict[int, str] = {1: "boot1", 2: "boot2", 3: "dracut"}
#: The initramfs generator each boot's image was built with (tests/distro/image.py).
BOOT_GENERATORS: dict[int, str] = {1: "initramfs-tools", 2: "initramfs-tools", 3: "dracut"}


def check_name(check: Callable[[Evidence], str]) -> str:
    """The name a check is reported under: its function's, without ``check_``."""
    return check.__name__.removeprefix("check_")


def boot_number(cmdline: str) -> int:
    """N from ``vfiod.distroboot=N`` on the kernel command line (0 when absent)."""
    match = re.search(r"(?:^|\s)vfiod\.distroboot=(\d+)(?:\s|$)", cmdline)
    return int(match.group(1)) if match else 0


def say(line: str) -> None:
    """A line for the console (the host follows the serial log) and the journal."""
    print(f"vfiod-distro: {line}", flush=True)


def run_boot(boot: int, folder: Path) -> list[dict[str, object]]:
    """Run one boot's checks in order; every check runs, whatever the others did."""
    folder.mkdir(parents=True, exist_ok=True)
    outcomes: list[dict[str, object]] = []
    for check in BOOTS[boot]:
        name = check_name(check)
        ev = Evidence(folder / f"{name}.log")
        started = time.monotonic()
        try:
            detail, passed = check(ev), True
        except CheckFailed as exc:
            detail, passed = str(exc), False
        except Exception:  # a broken check is a failed check, with its traceback
            detail, passed = traceback.format_exc(limit=3).strip().splitlines()[-1], False
            ev.note(traceback.format_exc())
        finally:
            ev.close()
        seconds = time.monotonic() - started
        outcomes.append({"name": name, "passed": passed, "seconds": round(seconds, 1),
                         "detail": detail, "doc": (check.__doc__ or "").split("\n")[0]})
        say(f"{'PASS' if passed else 'FAIL'} {name} ({seconds:.1f} s): {detail}")
        (folder / "results.json").write_text(json.dumps(outcomes, indent=1))
    return outcomes


def main() -> int:
    """Refuse outside the test guest; run this boot's checks (the unit powers off)."""
    if not in_test_guest():
        print(f"checks.py: refusing to run: {GUEST_MARKER} is not on the kernel command "
              "line (this binds, resets and uninstalls vfiod)", file=sys.stderr)
        return 2
    boot = boot_number(Path("/proc/cmdline").read_text())
    if boot not in BOOTS:
        print(f"checks.py: vfiod.distroboot=N (N in {sorted(BOOTS)}) is not on the kernel "
              "command line", file=sys.stderr)
        return 2
    folder = RESULTS / f"boot{boot}"
    try:
        say(f"boot {boot}: {len(BOOTS[boot])} checks")
        run_boot(boot, folder)
    finally:
        with open(folder / "journal.log", "w") as journal:
            subprocess.run(["journalctl", "-b", "--no-pager", "-q"], stdout=journal,
                           stderr=subprocess.STDOUT, check=False)
        (folder / "done").write_text(f"{time.time()}\n")
        os.sync()
        say(f"boot {boot}: done, powering off")  # the unit's SuccessAction
    return 0


if __name__ == "__main__":
    sys.exit(main())
