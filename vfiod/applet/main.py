"""``vfiod-applet [--session | --address ADDR] [--tray-address ADDR] [--config PATH]``.

The tray item goes on the session bus (or --tray-address); vfiod is followed on the
system bus (honouring DBUS_SYSTEM_BUS_ADDRESS), the session bus, or --address.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from dbus_fast import BusType
from dbus_fast.aio import MessageBus

from vfiod.applet.app import Applet
from vfiod.applet.settings import SettingsError, load_settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="vfiod-applet",
                                     description="A tray applet for vfiod.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--session", action="store_true",
                       help="follow vfiod on the session bus (a development daemon)")
    where.add_argument("--address", help="follow vfiod on the bus at this address")
    parser.add_argument("--tray-address",
                        help="the bus of the tray host (default: the session bus)")
    parser.add_argument("--config", type=Path,
                        help="applet config (default: ~/.config/vfiod/applet.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what it does")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Connect both buses, start the applet, run until SIGINT/SIGTERM or a bus goes."""
    settings = load_settings(args.config)
    tray = MessageBus(bus_address=args.tray_address) if args.tray_address \
        else MessageBus(bus_type=BusType.SESSION)
    await tray.connect()
    if args.address:
        vfiod_bus = MessageBus(bus_address=args.address)
    else:
        vfiod_bus = MessageBus(bus_type=BusType.SESSION if args.session else BusType.SYSTEM)
    await vfiod_bus.connect()
    applet = Applet(tray, vfiod_bus, settings)
    await applet.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    waits = [asyncio.ensure_future(w) for w in
             (stop.wait(), tray.wait_for_disconnect(), vfiod_bus.wait_for_disconnect())]
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    tray.disconnect()
    vfiod_bus.disconnect()
    return 0 if waits[0] in done else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vfiod-applet``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="vfiod-applet: %(message)s")
    try:
        return asyncio.run(run(args))
    except SettingsError as exc:
        print(f"vfiod-applet: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bus that cannot be reached: one clear line, no traceback
        print(f"vfiod-applet: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
