"""``vfioctl``: parse the command line, run the command, turn failures into one line.

No failure shows a traceback: errors from vfiod, a missing bus, Ctrl-C and bugs alike
end as one ``vfioctl: ...`` line on stderr and a documented exit code (``vfioctl
--help``). Set VFIOCTL_DEBUG=1 to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys

from vfiod.ctl import exitcodes
from vfiod.ctl.exitcodes import CtlError
from vfiod.ctl.parser import PROG, parse_args
from vfiod.printable import printable

#: Commands that run here without vfiod.
LOCAL_COMMANDS = frozenset({"doctor", "initramfs", "libvirt-hook"})
#: Commands that only query vfiod: they run on the blocking client (vfiod.ctl.wire),
#: without importing dbus-fast and asyncio (most of vfioctl's start-up otherwise).
QUERY_COMMANDS = frozenset({"status"})


def fail(message: str, code: int) -> int:
    """Print one error line on stderr and return *code*."""
    text = printable(" ".join(str(message).split()))
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()
    return code


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; exceptions propagate to main."""
    if args.command in LOCAL_COMMANDS:
        from vfiod.ctl import local

        return local.run(args)
    if args.command in QUERY_COMMANDS:
        from vfiod.ctl.wire import UnsupportedAddress

        try:
            return _run_query(args)
        except UnsupportedAddress:
            pass  # a bus that is not at a Unix socket: dbus-fast's client below
    import asyncio

    return asyncio.run(_run_remote(args))


def _run_query(args: argparse.Namespace) -> int:
    from vfiod.ctl.commands import check_arguments
    from vfiod.ctl.commands import run as run_command
    from vfiod.ctl.wire import WireClient, run_now

    check_arguments(args)  # a malformed DEVICE fails before any bus traffic
    client = WireClient.connect(session=args.session, address=args.address,
                                timeout=args.timeout)
    try:
        return run_now(run_command(client, args))  # type: ignore[arg-type]
    finally:
        client.close()


async def _run_remote(args: argparse.Namespace) -> int:
    from vfiod.ctl.client import VfiodClient
    from vfiod.ctl.commands import check_arguments
    from vfiod.ctl.commands import run as run_command

    check_arguments(args)  # a malformed DEVICE fails before any bus traffic
    client = await VfiodClient.connect(session=args.session, address=args.address,
                                       timeout=args.timeout)
    try:
        return await run_command(client, args)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """The ``vfioctl`` entry point; returns the exit status."""
    args = parse_args(argv)  # usage errors and --help exit here
    try:
        return run(args)
    except KeyboardInterrupt:
        busy = args.command in ("bind", "unbind", "reset")
        return fail("interrupted" + ("; vfiod finishes what it started (see vfioctl status)"
                                     if busy else ""), exitcodes.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (vfioctl monitor | head -1): not an error to report.
        _silence_stdout()
        return exitcodes.OK
    except Exception as exc:
        from vfiod.errors import VfiodError

        if isinstance(exc, (CtlError, VfiodError)):
            return fail(str(exc), exc.exit_code)
        if os.environ.get("VFIOCTL_DEBUG"):
            raise
        return fail(f"unexpected error: {type(exc).__name__}: {exc} "
                    "(a bug in vfioctl; VFIOCTL_DEBUG=1 shows where)", exitcodes.FAILED)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; point it at /dev/null so that flush cannot fail.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
