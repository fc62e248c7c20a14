"""``vfiod``: the command line of the daemon.

    vfiod [--config PATH] [--simulate PROFILE [--sim-root DIR]]
          [--session | --address ADDR] [--state-dir DIR]

The system bus by default (honouring DBUS_SYSTEM_BUS_ADDRESS); the real host unless
``--simulate`` names a profile of the simulated kernel. Exit status: 0 after a clean
stop, 1 when it cannot start (the message says why), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dbus_fast import BusType

from vfiod.contract import DEFAULT_CONFIG_PATH
from vfiod.daemon.log import log, setup_logging

if TYPE_CHECKING:
    from vfiod.host.base import Host

#: What makes the host vfiod manages from its options (``open_host`` unless a program
#: embedding vfiod's main, such as a test's launcher, brings its own).
HostOpener = Callable[[argparse.Namespace], "Host"]

DEFAULT_STATE_DIR = "/var/lib/vfiod"


def default_state_dir() -> str:
    """$STATE_DIRECTORY (systemd's StateDirectory=, first entry) or /var/lib/vfiod."""
    value = os.environ.get("STATE_DIRECTORY", "")
    return value.split(":")[0] if value else DEFAULT_STATE_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The daemon's options."""
    parser = argparse.ArgumentParser(
        prog="vfiod", description="VFIO passthrough manager: the D-Bus daemon (org.vfiod1).")
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, metavar="PATH",
                        help=f"config file (default {DEFAULT_CONFIG_PATH}; absent means empty)")
    parser.add_argument("--simulate", metavar="PROFILE",
                        help="manage a simulated host (seed-x99, seed-x99-noiommu, "
                             "seed-x99-shared-bus, scale, test-guest) "
                             "instead of this machine")
    parser.add_argument("--sim-root", metavar="DIR",
                        help="keep the simulated machine's tree in DIR (re-attach when it "
                             "already holds one); a temporary directory otherwise")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--session", action="store_true", help="use the session bus")
    where.add_argument("--address", metavar="ADDR", help="use the bus at this D-Bus address")
    parser.add_argument("--state-dir", default=None, metavar="DIR",
                        help="where state that survives a crash is kept "
                             "(default $STATE_DIRECTORY or /var/lib/vfiod)")
    parser.add_argument("--write-timeout", type=float, default=None, metavar="SECONDS",
                        help="how long a kernel write may block (an unbind while a guest "
                             "holds the device) before the call answers Timeout and the "
                             "group stays busy until the kernel returns (default 10)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    if args.write_timeout is not None and not args.write_timeout > 0:
        parser.error("--write-timeout must be a positive number of seconds")
    if args.sim_root and not args.simulate:
        parser.error("--sim-root needs --simulate PROFILE")
    return args


def open_host(args: argparse.Namespace) -> Host:
    """The host vfiod manages: the simulated PROFILE with --simulate, else this machine.

    The simulated machine is built in --sim-root (or re-attached when that already
    holds one), in a temporary directory without it.
    """
    if args.simulate:
        from vfiod.sim import SimHost

        if args.sim_root is not None:
            Path(args.sim_root).mkdir(mode=0o755, parents=True, exist_ok=True)
        began = time.monotonic()
        host = SimHost(profile=args.simulate, root=args.sim_root)
        # Said apart: a real host's /sys is there already; benchmarks take this off
        # vfiod's start (benchmarks/bench.py).
        log.info("simulated %s machine %s in %.3f s", args.simulate,
                 "re-attached" if host.reattached else "built", time.monotonic() - began)
        return host
    from vfiod.host.real import RealHost

    return RealHost("/")


async def _serve(args: argparse.Namespace, host_opener: HostOpener,
                 write_timeout: float | None) -> int:
    # Imported here so that --help stays fast and a broken install reports cleanly.
    from vfiod.config import ConfigError, load_config
    from vfiod.daemon.runtime import Daemon, StartupError
    from vfiod.engine import Engine
    from vfiod.errors import VfiodError
    from vfiod.host.base import DEFAULT_WRITE_TIMEOUT

    try:
        config = await asyncio.to_thread(load_config, args.config)
    except ConfigError as err:
        log.error("cannot start: %s", err)
        return 1

    try:
        host = await asyncio.to_thread(host_opener, args)
    except (VfiodError, ValueError, OSError) as err:
        if args.simulate:
            log.error("cannot start the simulated host %r: %s", args.simulate, err)
        else:
            log.error("cannot start: %s", err)
        return 1

    state_dir = Path(args.state_dir or default_state_dir())
    daemon: Daemon | None = None
    try:
        engine = Engine(host, state_dir, config, write_timeout=(
            write_timeout or args.write_timeout or DEFAULT_WRITE_TIMEOUT))
        bus_type = BusType.SESSION if args.session else BusType.SYSTEM
        daemon = Daemon(engine, args.config, bus_address=args.address, bus_type=bus_type,
                        simulated=host.simulated)
        await daemon.run()
    except StartupError as err:
        log.error("cannot start: %s", err)
        return 1
    except (VfiodError, OSError) as err:
        log.error("cannot start: %s", err)
        return 1
    finally:
        if daemon is None or not daemon.abandoned:
            await asyncio.to_thread(host.close)
    if daemon.abandoned:
        # Threads blocked in the kernel would hold up interpreter exit.
        log.info("stopped (operations abandoned)")
        sys.stderr.flush()
        os._exit(0)
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None, *, host_opener: HostOpener = open_host,
         write_timeout: float | None = None) -> int:
    """Entry point of ``vfiod``.

    *host_opener* and *write_timeout* (seconds a kernel write may block before the
    operation fails; DEFAULT_WRITE_TIMEOUT) are for a program that embeds vfiod's main,
    such as the tests' launcher, which arms the simulated host it opens with faults.
    """
    args = parse_args(argv)
    setup_logging(args.verbose)
    try:
        return asyncio.run(_serve(args, host_opener, write_timeout))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


if __name__ == "__main__":
    sys.exit(main())
