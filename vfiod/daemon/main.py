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
from pathlib import Path

from dbus_fast import BusType

from vfiod.contract import DEFAULT_CONFIG_PATH
from vfiod.daemon.log import log, setup_logging

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
                        help="manage a simulated host (seed-x99, seed-x99-noiommu, scale) "
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
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    if args.sim_root and not args.simulate:
        parser.error("--sim-root needs --simulate PROFILE")
    return args


async def _serve(args: argparse.Namespace) -> int:
    # Imported here so that --help stays fast and a broken install reports cleanly.
    from vfiod.config import ConfigError, load_config
    from vfiod.daemon.runtime import Daemon, StartupError
    from vfiod.engine import Engine
    from vfiod.errors import VfiodError
    from vfiod.host.base import DEFAULT_WRITE_TIMEOUT, Host

    try:
        config = await asyncio.to_thread(load_config, args.config)
    except ConfigError as err:
        log.error("cannot start: %s", err)
        return 1

    host: Host
    fatal: tuple[type[BaseException], ...] = ()
    write_timeout = DEFAULT_WRITE_TIMEOUT
    if args.simulate:
        from vfiod.daemon import faults

        try:
            host = await asyncio.to_thread(faults.make_sim_host, args.simulate, args.sim_root)
            knobs = faults.knobs_from_env()
            faults.apply(host, knobs)
        except (VfiodError, ValueError, OSError) as err:
            log.error("cannot start the simulated host %r: %s", args.simulate, err)
            return 1
        fatal = faults.fatal_exceptions()
        write_timeout = knobs.write_timeout or DEFAULT_WRITE_TIMEOUT
    else:
        from vfiod.host.real import RealHost

        host = RealHost("/")

    state_dir = Path(args.state_dir or default_state_dir())
    daemon: Daemon | None = None
    try:
        engine = Engine(host, state_dir, config, write_timeout=write_timeout)
        bus_type = BusType.SESSION if args.session else BusType.SYSTEM
        daemon = Daemon(engine, args.config, bus_address=args.address, bus_type=bus_type,
                        simulated=host.simulated, fatal=fatal)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vfiod``."""
    args = parse_args(argv)
    setup_logging(args.verbose)
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


if __name__ == "__main__":
    sys.exit(main())
