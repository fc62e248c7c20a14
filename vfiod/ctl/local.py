"""The commands that run here, without vfiod: doctor, initramfs, libvirt-hook.

They read this machine through a host that cannot write: ``ReadOnlyHost`` refuses every
kernel control-file write and every module load, so that ``vfioctl doctor`` (often run
as root) can never change the machine it examines. ``--simulate PROFILE`` uses a
simulated host in a temporary directory instead.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vfiod.contract import DEFAULT_CONFIG_PATH
from vfiod.ctl import exitcodes
from vfiod.ctl.exitcodes import CtlError
from vfiod.errors import HostWriteError, ModuleLoadError
from vfiod.host import paths
from vfiod.host.base import Host
from vfiod.host.real import RealHost
from vfiod.printable import printable



class ReadOnlyHost(RealHost):
    """The real machine, for reading only: writes and module loads fail, untried."""

    def _write(self, path: str, value: str) -> None:
        raise OSError(errno.EROFS, f"vfioctl reads the host only; not writing {path}")

    def load_module(self, name_or_modalias: str) -> None:
        raise ModuleLoadError(f"vfioctl reads the host only; not loading {name_or_modalias}")

    def vfio_hot_reset(self, address: str) -> list[str]:
        raise HostWriteError(paths.VFIO_DIR, "hot reset", errno.EROFS, address)


@contextmanager
def open_host(simulate: str | None) -> Iterator[Host]:
    """This machine read-only, or a simulated one (deleted afterwards)."""
    if simulate is None:
        host: Host = ReadOnlyHost("/")
    else:
        from vfiod.sim import PROFILES, SimHost

        if simulate not in PROFILES:
            raise CtlError(f"--simulate {simulate}: no such profile (known: "
                           f"{', '.join(sorted(PROFILES))})", exitcodes.USAGE)
        host = SimHost(profile=simulate)
    try:
        yield host
    finally:
        host.close()


def load(path: str | None) -> Any:
    """vfiod's config (an absent file is an empty one); ConfigError exits 2."""
    from vfiod.config import load_config

    return load_config(path or os.environ.get("VFIOD_CONFIG") or DEFAULT_CONFIG_PATH)


def run(args: argparse.Namespace) -> int:
    """Dispatch one local command."""
    if args.command == "doctor":
        return cmd_doctor(args)
    if args.command == "initramfs":
        return cmd_initramfs(args)
    return cmd_libvirt_hook(args)


# -- doctor ----------------------------------------------------------------------------

_MARK = {"ok": "ok", "warn": "warn", "fail": "FAIL"}


def format_checks(checks: list[Any]) -> str:
    """One line per check (``ok``/``warn``/``FAIL``, id, summary), its fix below it,
    and a count at the end."""
    width = max((len(c.id) for c in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{_MARK.get(check.status, check.status):<4}  {check.id:<{width}}  "
                     f"{printable(str(check.summary))}")
        if check.status != "ok" and check.fix:
            pad = " " * (4 + 2 + width + 2)
            for i, fix_line in enumerate(str(check.fix).splitlines()):
                lines.append(pad + ("fix: " if i == 0 else "     ") + printable(fix_line))
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "warn", "fail")}
    warnings = "warning" if counts["warn"] == 1 else "warnings"
    lines.append(f"{counts['ok']} ok, {counts['warn']} {warnings}, {counts['fail']} failed")
    return "\n".join(lines) + "\n"


def checks_json(checks: list[Any]) -> str:
    """The checks as a JSON list of {id, status, summary, fix}."""
    return json.dumps([{"id": c.id, "status": c.status, "summary": printable(str(c.summary)),
                        "fix": "\n".join(printable(line)
                                         for line in str(c.fix or "").splitlines())}
                       for c in checks], indent=2,
                      ensure_ascii=False) + "\n"


def cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor [--simulate PROFILE] [--config PATH] [--json]``: exit 0 when no check
    failed, 1 otherwise."""
    from vfiod.doctor import run_checks

    config = load(args.config)
    with open_host(args.simulate) as host:
        checks = list(run_checks(host, config))
    sys.stdout.write(checks_json(checks) if args.json else format_checks(checks))
    failed = any(c.status == "fail" for c in checks)
    return exitcodes.FAILED if failed else exitcodes.OK


# -- initramfs -------------------------------------------------------------------------

def cmd_initramfs(args: argparse.Namespace) -> int:
    """``initramfs render|install``: the early-boot shim for this host and config."""
    from vfiod import initramfs
    from vfiod.discovery import scan

    if getattr(args, "root", None) is not None:
        return _initramfs_offline(args)
    config = load(args.config)
    with open_host(args.simulate) as host:
        devices = scan(host)
        if args.action == "render":
            # The preview says what install would refuse, in the script and on stderr.
            warnings = initramfs.preview_warnings(host, config, devices)
            sys.stdout.write(initramfs.render_shim(config, devices, warnings))
            for warning in warnings:
                sys.stderr.write(f"vfioctl: warning: {warning}\n")
            return exitcodes.OK
        result = initramfs.install_shim(config, host, root=args.destdir, tool=args.tool,
                                        devices=devices)
    _report(result)
    return exitcodes.OK


def _initramfs_offline(args: argparse.Namespace) -> int:
    """``initramfs install --root DIR``: into an image, from its config alone."""
    from vfiod import initramfs

    if args.simulate or args.destdir != "/":
        raise CtlError("initramfs install --root reads no host: it takes neither "
                       "--simulate nor --destdir", exitcodes.USAGE)
    root = Path(args.root)
    config = load(args.config or str(root / DEFAULT_CONFIG_PATH.lstrip("/")))
    result = initramfs.install_shim_offline(config, root=root, tool=args.tool)
    _report(result)
    if result.claimed:
        print("note: rendered offline: at boot the shim checks these ids at these addresses "
              "and claims only whole IOMMU groups")
    return exitcodes.OK


def _report(result: Any) -> None:
    """What an install did, and what to run next."""
    for dev in result.claimed:
        print(f"claims {dev.address} ({dev.ids}) at boot: {dev.why}")
    for path in result.written:
        print(f"wrote {path}")
    for path in result.removed:
        print(f"removed {path} (no device has boot = \"vfio\")")
    for step in result.next_steps:
        print(f"next: {step}")


# -- libvirt-hook ----------------------------------------------------------------------

def cmd_libvirt_hook(args: argparse.Namespace) -> int:
    """``libvirt-hook render|install``: the qemu hook that asks vfiod to bind a
    domain's host devices before it starts and applies on_release after it stops."""
    from vfiod import libvirt_hook

    if args.action == "render":
        sys.stdout.write(libvirt_hook.render_hook(python=args.python))
        return exitcodes.OK
    path = libvirt_hook.install_hook(root=args.destdir, python=args.python)
    print(f"wrote {path}")
    print("next: restart libvirtd (it reads its hook directories when it starts)")
    return exitcodes.OK
