"""The commands that talk to vfiod: status, bind, unbind, reset, monitor.

Each takes a connected VfiodClient and the parsed arguments, prints what happened and
returns the exit code; failures are raised as CtlError for main to print.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from vfiod.address import check_device_argument, normalize_address
from vfiod.ctl import exitcodes, output
from vfiod.ctl.devices import DeviceProperties
from vfiod.ctl.exitcodes import CtlError
from vfiod.contract import DEFAULT_CONFIG_PATH
from vfiod.errors import InvalidArgument, NoSuchDevice, VfiodError

if TYPE_CHECKING:  # status runs on vfiod.ctl.wire, without dbus-fast and asyncio
    from vfiod.ctl.client import VfiodClient

#: The Device property a daemon may export with a device's name from the config file.
CONFIG_NAME_PROPERTY = "ConfigName"


def device_argument(text: str) -> str:
    """The checked device argument (full address or name); CtlError exit 2 otherwise.

    Checked here, before any bus traffic, with the rules the daemon applies.
    """
    try:
        return check_device_argument(text)
    except InvalidArgument as err:
        raise CtlError(str(err), exitcodes.USAGE, InvalidArgument.dbus_name) from None


def about(device: str, err: CtlError) -> CtlError:
    """*err* with its message prefixed by the device, unless it starts with it."""
    if err.exit_code == exitcodes.UNREACHABLE or \
            err.message.startswith((device, repr(device))):
        return err
    return CtlError(f"{device}: {err.message}", err.exit_code, err.dbus_name)


def check_arguments(args: argparse.Namespace) -> None:
    """Check and normalise ``args.device`` in place (full address or name); read
    check-domain's FILE into ``args.domain``."""
    if getattr(args, "device", None) is not None:
        args.device = device_argument(args.device)
    if args.command == "check-domain":  # a bad file fails before any bus traffic too
        from vfiod.ctl.domain import read_domain

        args.domain = read_domain(args.file)


async def run(client: VfiodClient, args: argparse.Namespace) -> int:
    """Dispatch one remote command."""
    if getattr(args, "dry_run", False):
        from vfiod.ctl.dryrun import cmd_dry_run

        return await cmd_dry_run(client, args)
    if args.command == "check-domain":
        from vfiod.ctl.domain import cmd_check_domain

        return await cmd_check_domain(client, args)
    handler = {
        "status": cmd_status,
        "bind": cmd_bind,
        "unbind": cmd_unbind,
        "reset": cmd_reset,
        "jobs": _cmd_jobs,
    }.get(args.command)
    if handler is None:
        from vfiod.ctl.monitor import cmd_monitor

        return await cmd_monitor(client, args)
    return await handler(client, args)


async def _cmd_jobs(client: VfiodClient, args: argparse.Namespace) -> int:
    from vfiod.ctl.jobs import cmd_jobs

    return await cmd_jobs(client, args)


async def all_devices(client: VfiodClient) -> dict[str, DeviceProperties]:
    """Every device with all its properties; from Status() rows if vfiod exports no
    Device objects (an older daemon)."""
    devices = await client.devices()
    if not devices:
        devices = {row[0]: DeviceProperties.from_status_row(row)
                   for row in await client.status_rows()}
    return devices


async def cmd_status(client: VfiodClient, args: argparse.Namespace) -> int:
    """``status [DEVICE] [--json]``."""
    if args.device is not None:
        return await _status_one(client, args)
    devices = list((await all_devices(client)).values())
    if args.json:
        sys.stdout.write(output.status_json(devices))
        return exitcodes.OK
    manager = await client.manager_properties()
    width = status_width(args.full)
    if manager.get("Simulated"):
        print(output.fit("simulated host (vfiod --simulate)", width))
    if manager.get("IommuEnabled") is False:
        print(output.fit("the IOMMU is off: no device can be passed through "
                         "(run vfioctl doctor for how to turn it on)", width))
    sys.stdout.write(output.status_table(devices, width))
    print(output.fit(output.summary_line(devices), width))
    return exitcodes.OK


def status_width(full: bool) -> int | None:
    """The width status (and bind's and unbind's lines) must fit: COLUMNS when set (a caller piping vfioctl
    to a terminal, as the demo does), else the terminal's; None (whole text) with
    --full or when stdout is not a terminal and COLUMNS is not set, as systemctl does."""
    if full or not (sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit()):
        return None
    return shutil.get_terminal_size().columns


async def _status_one(client: VfiodClient, args: argparse.Namespace) -> int:
    devices = await all_devices(client)
    address = normalize_address(args.device) or _address_for_name(args.device, devices)
    dev = devices.get(address)
    if dev is None:
        raise CtlError(f"{address}: no such PCI device", NoSuchDevice.exit_code,
                       NoSuchDevice.dbus_name)
    if args.json:
        sys.stdout.write(output.device_json(dev))
        return exitcodes.OK
    peers = [d for d in devices.values()
             if dev.iommu_group >= 0 and d.iommu_group == dev.iommu_group]
    sys.stdout.write(output.device_detail(dev, sorted(peers, key=lambda d: d.address)))
    return exitcodes.OK


def _address_for_name(name: str, devices: dict[str, DeviceProperties]) -> str:
    """The address a config name stands for, with the daemon's errors otherwise:
    InvalidArgument (exit 2) for a name no config entry has, NoSuchDevice (exit 3) for
    one that matches no device.

    vfiod resolves names itself for bind, unbind and reset; for ``status NAME`` it
    offers no call, so this uses the daemon's ConfigName property when it exports one,
    else reads the config file here ($VFIOD_CONFIG or /etc/vfiod/vfiod.toml; pydantic
    is imported only on this path).
    """
    for dev in devices.values():
        if dev.extra.get(CONFIG_NAME_PROPERTY) == name:
            return dev.address
    path = os.environ.get("VFIOD_CONFIG") or DEFAULT_CONFIG_PATH
    config = None
    if os.path.exists(path):
        from vfiod.config import load_config

        config = load_config(path)  # ConfigError: exit 2, file:line
    from vfiod.config import resolve_name

    try:
        return resolve_name(config, name, ((d.address, d.vendor_id, d.device_id)
                                           for d in devices.values()), where=path)
    except VfiodError as err:
        raise CtlError(str(err), err.exit_code, err.dbus_name) from None


async def _drivers_now(client: VfiodClient) -> dict[str, DeviceProperties]:
    """Every function's name, driver and state now (one Status() call)."""
    return {row[0]: DeviceProperties.from_status_row(row) for row in await client.status_rows()}


async def _as_job(client: VfiodClient, args: argparse.Namespace,
                  synchronous: Callable[[], Awaitable[Any]]) -> Any:
    """Run the command's operation as a job, followed live (vfiod.ctl.jobs); what it
    returned (the moved addresses, or the reset method), or None after ``--no-wait``
    printed the job's path. A vfiod without jobs gets the *synchronous* call."""
    from vfiod.ctl.jobs import JobState, run_job

    try:
        job = await run_job(client, args)
        if job is None:
            return await synchronous()
    except CtlError as err:
        raise about(args.device, err) from None
    if isinstance(job, JobState):
        return job.method if args.command == "reset" else job.devices
    print(job)  # --no-wait: the path, for `vfioctl jobs` or busctl
    return None


async def cmd_bind(client: VfiodClient, args: argparse.Namespace) -> int:
    """``bind DEVICE [--no-group] [--force] [--wait S] [--no-wait]``: print each
    function that moved."""
    device = args.device
    before = {} if args.no_wait else await _drivers_now(client)
    moved = await _as_job(client, args, lambda: client.bind(
        device, group=not args.no_group, force=args.force))
    if moved is None:
        return exitcodes.OK
    after = await _drivers_now(client)
    _print_moved(device, moved, before, after, "already on vfio-pci: nothing to do")
    return exitcodes.OK


async def cmd_unbind(client: VfiodClient, args: argparse.Namespace) -> int:
    """``unbind DEVICE [--no-group] [--wait S] [--no-wait]``: print each function that
    moved."""
    device = args.device
    before = {} if args.no_wait else await _drivers_now(client)
    moved = await _as_job(client, args, lambda: client.unbind(device, group=not args.no_group))
    if moved is None:
        return exitcodes.OK
    after = await _drivers_now(client)
    _print_moved(device, moved, before, after, "not on vfio-pci: nothing to do")
    return exitcodes.OK


def _print_moved(device: str, moved: list[str], before: dict[str, DeviceProperties],
                 after: dict[str, DeviceProperties], nothing: str) -> None:
    if not moved:
        current = after.get(device)
        driver = f" (driver {current.driver or 'none'})" if current is not None else ""
        print(f"{device}: {nothing}{driver}")
        return
    for line in output.moved_lines(moved, before, after, status_width(full=False)):
        print(line)


async def cmd_reset(client: VfiodClient, args: argparse.Namespace) -> int:
    """``reset DEVICE [--force] [--clear] [--wait S] [--no-wait]``: print the method that
    worked."""
    device = args.device
    method = await _as_job(client, args, lambda: client.reset(
        device, force=args.force, clear=args.clear))
    if method is None:
        return exitcodes.OK
    dev = await client.device(device) if normalize_address(device) else None
    name = f"  {dev.name}" if dev is not None and dev.name else ""
    print(f"{device}{name}  reset ({method}), healthy")
    return exitcodes.OK
