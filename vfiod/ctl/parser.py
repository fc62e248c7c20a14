"""vfioctl's command line: every command, option and the exit codes in ``--help``.

Only argparse and the exit-code table are imported here, so that ``vfioctl --help``
and a usage error cost nothing beyond starting Python.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from vfiod import __version__
from vfiod.ctl import exitcodes

PROG = "vfioctl"

DESCRIPTION = """\
Manage VFIO passthrough through vfiod: see which driver each PCI function is on, move
devices (with their whole IOMMU group) between vfio-pci and their host drivers, reset
them, follow changes, and check the host's IOMMU/VFIO setup.

A DEVICE is a PCI address (0000:06:00.0 or 06:00.0) or a name from vfiod's config file.
vfioctl talks to vfiod on the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured) unless
--session or --address say otherwise. doctor, initramfs and libvirt-hook run locally."""


def _epilog() -> str:
    lines = ["exit status:"]
    lines += [f"  {code:>3}  {meaning}" for code, meaning in exitcodes.TABLE]
    lines += ["", "environment:",
              "  DBUS_SYSTEM_BUS_ADDRESS  the system bus (default: "
              "/var/run/dbus/system_bus_socket)",
              "  VFIOD_CONFIG             the config file doctor, initramfs and "
              "`status NAME` read",
              "                           (default /etc/vfiod/vfiod.toml)",
              "  VFIOCTL_DEBUG=1          show the traceback of an unexpected error"]
    lines += ["", "examples:",
              "  vfioctl status                 every PCI function, by IOMMU group",
              "  vfioctl bind 06:00.0           the GPU and its HDMI audio to vfio-pci",
              "  vfioctl unbind gpu             back to the drivers they came from",
              "  vfioctl bind gpu --dry-run     what bind would do, changing nothing",
              "  virsh dumpxml win10 | vfioctl check-domain -",
              "  vfioctl monitor --json         one JSON object a line per change"]
    return "\n".join(lines)


class CtlArgumentParser(argparse.ArgumentParser):
    """argparse with vfioctl's error style: usage, then one "vfioctl: reason" line."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(exitcodes.USAGE, f"{PROG}: {message}\n")


def _device(parser: argparse.ArgumentParser, helptext: str, optional: bool = False) -> None:
    parser.add_argument("device", metavar="DEVICE", nargs="?" if optional else None,
                        help=helptext)


def build_parser() -> CtlArgumentParser:
    """The full vfioctl command line."""
    parser = CtlArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bus = parser.add_mutually_exclusive_group()
    bus.add_argument("--session", action="store_true",
                     help="talk to vfiod on the session bus (a development daemon)")
    bus.add_argument("--address", metavar="ADDR",
                     help="talk to vfiod on the bus at this D-Bus address "
                          "(unix:path=/run/...)")
    parser.add_argument("--timeout", metavar="SECONDS", type=_positive_float, default=None,
                        help="give up waiting for vfiod after this long (default: 25 s "
                             "for queries; bind, unbind and reset follow their job to its "
                             "end however long it takes)")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=CtlArgumentParser)

    status = sub.add_parser("status", help="show every device, or one in detail",
                            description="Show every PCI function grouped by IOMMU group, "
                                        "or every property of one device.")
    _device(status, "show this device in detail", optional=True)
    status.add_argument("--json", action="store_true",
                        help="machine-readable output (a list of objects; one object "
                             "with DEVICE)")
    status.add_argument("-l", "--full", action="store_true",
                        help="show names, holders and notes whole, however wide (the "
                             "default when the output is not a terminal); otherwise "
                             "they are shortened with \u2026 to fit the terminal's width")

    bind = sub.add_parser("bind", help="put a device (and its IOMMU group) on vfio-pci",
                          description="Put DEVICE on vfio-pci, with every other endpoint "
                                      "of its IOMMU group (bridges stay).")
    _device(bind, "the device to hand to vfio-pci")
    bind.add_argument("--no-group", action="store_true",
                      help="move only DEVICE, not the rest of its IOMMU group")
    bind.add_argument("--force", action="store_true",
                      help="override the soft in-use guards (a display, sound or network "
                           "device the host uses); never a mounted disk or active swap. "
                           "A GPU the desktop holds is asked to release its card first")

    unbind = sub.add_parser("unbind", help="return a device (and its group) to its host "
                                           "driver",
                            description="Return DEVICE (and its IOMMU group) to the driver "
                                        "it had before, or the kernel's best match.")
    _device(unbind, "the device to give back to the host")
    unbind.add_argument("--no-group", action="store_true",
                        help="move only DEVICE, not the rest of its IOMMU group")

    reset = sub.add_parser("reset", help="reset a device and check it is healthy",
                           description="Reset DEVICE (FLR, PM, bus, device-specific: the "
                                       "first that works) and check it is healthy.")
    _device(reset, "the device to reset")
    reset.add_argument("--force", action="store_true",
                       help="reset even when the host uses it softly (display, sound, "
                            "network); never a mounted disk or active swap")
    reset.add_argument("--clear", action="store_true",
                       help="lift the device's quarantine first (after its resets kept "
                            "failing, Bind refuses it until this), then reset it")

    for op in (bind, unbind, reset):
        op.add_argument("--dry-run", action="store_true",
                        help="do every check and change nothing: print what it would do "
                             "(each device's driver now and after, the guards, the reset "
                             "methods it would try, the modules it would load) and exit "
                             "as the real call would")
        op.add_argument("--json", action="store_true",
                        help="with --dry-run: the plan as one JSON object")

    check_domain = sub.add_parser(
        "check-domain", help="check a libvirt domain's PCI devices before it starts",
        description="Check every PCI <hostdev> (and <interface type='hostdev'>) of a "
                    "libvirt domain XML as one set, as the libvirt hook does before the "
                    "guest starts: the device exists, its ids are the config file's, its "
                    "IOMMU group is complete, it is healthy, and the host does not need "
                    "it. Prints every problem with its fix; changes nothing. Exit status "
                    "0 when no check found an error (warnings allowed), 1 when one did.")
    check_domain.add_argument("file", metavar="FILE",
                              help="the domain XML (virsh dumpxml GUEST), or - for stdin")
    check_domain.add_argument("--json", action="store_true",
                              help="machine-readable output (a list of objects)")

    for p in (bind, unbind, reset):
        p.add_argument("--wait", metavar="SECONDS", type=_wait_seconds, default=0,
                       help="while a process holds the device (a guest, or a program "
                            "using its sound or display node), wait up to this long for "
                            "it to let go instead of refusing at once (at most 3600)")
        p.add_argument("--no-wait", action="store_true",
                       help="start the operation as a job, print the job's object path "
                            "and return (follow it with `vfioctl jobs` or `vfioctl "
                            "monitor`)")

    jobs = sub.add_parser("jobs", help="list the running bind, unbind and reset jobs",
                          description="List the operations vfiod is running (oldest "
                                      "first): what, on which devices, the step, what "
                                      "it waits for, for how long.")
    jobs.add_argument("--json", action="store_true", help="machine-readable output")

    monitor = sub.add_parser("monitor", help="follow changes until Ctrl-C",
                             description="Print every change vfiod reports (driver, "
                                         "state, holder, ...) until Ctrl-C or SIGTERM.")
    monitor.add_argument("--json", action="store_true",
                         help="one JSON object a line, flushed at once (for scripts "
                              "and applets)")

    doctor = sub.add_parser("doctor", help="check the host's IOMMU/VFIO setup",
                            description="Check the IOMMU, the kernel command line, "
                                        "vfio-pci and the configured devices, and say "
                                        "how to fix each problem. Reads only; changes "
                                        "nothing. Exit status 0 when no check failed.")
    doctor.add_argument("--simulate", metavar="PROFILE",
                        help="check a simulated host (e.g. seed-x99) instead of this one")
    doctor.add_argument("--config", metavar="PATH", default=None,
                        help="vfiod's config file (default /etc/vfiod/vfiod.toml)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    initramfs = sub.add_parser("initramfs", help="the early-boot shim",
                               description="Render or install the early-boot shim that "
                                           "claims boot = \"vfio\" devices before their "
                                           "host drivers load.")
    isub = initramfs.add_subparsers(dest="action", metavar="ACTION",
                                    parser_class=CtlArgumentParser)
    irender = isub.add_parser("render", help="print the shim for this host and config")
    iinstall = isub.add_parser("install", help="install the shim and the integration of "
                                               "the initramfs tool in use")
    for p in (irender, iinstall):
        p.add_argument("--config", metavar="PATH", default=None,
                       help="vfiod's config file (default /etc/vfiod/vfiod.toml)")
        p.add_argument("--simulate", metavar="PROFILE",
                       help="resolve IOMMU groups on a simulated host (e.g. seed-x99)")
    iinstall.add_argument("--destdir", metavar="DIR", default="/",
                          help="install under this root (default /)")
    iinstall.add_argument("--root", metavar="DIR", default=None,
                          help="offline, for image builders: render from the config alone "
                               "(default DIR/etc/vfiod/vfiod.toml; each boot = \"vfio\" "
                               "entry as ids@address, every group member listed), reading "
                               "no device of this machine, into the image at DIR")
    iinstall.add_argument("--tool", choices=("initramfs-tools", "dracut", "mkinitcpio"),
                          help="the initramfs tool (default: the one installed)")

    hook = sub.add_parser("libvirt-hook", help="the libvirt qemu hook",
                          description="Render or install the libvirt qemu hook that asks "
                                      "vfiod to bind a domain's host devices before it "
                                      "starts and to release them after it stops.")
    hsub = hook.add_subparsers(dest="action", metavar="ACTION",
                               parser_class=CtlArgumentParser)
    hrender = hsub.add_parser("render", help="print the hook")
    hinstall = hsub.add_parser("install", help="install the hook to "
                                               "/etc/libvirt/hooks/qemu.d/vfiod")
    for p in (hrender, hinstall):
        p.add_argument("--python", metavar="PATH", default=None,
                       help="the hook's interpreter, run with -I (default: the system's "
                            "/usr/bin/python3; the hook needs only the standard library)")
    hinstall.add_argument("--destdir", metavar="DIR", default="/",
                          help="install under this root (default /)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse vfioctl's arguments; usage errors exit 2 with one "vfioctl:" line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("a command is needed: status, bind, unbind, reset, jobs, check-domain, "
                     "monitor, doctor, initramfs or libvirt-hook")
    if args.command in ("initramfs", "libvirt-hook") and args.action is None:
        parser.error(f"{args.command}: an action is needed: render or install")
    if getattr(args, "json", False) and args.command in ("bind", "unbind", "reset") \
            and not args.dry_run:
        parser.error(f"{args.command}: --json goes with --dry-run")
    return args


def _wait_seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"not between 0 and 3600 seconds: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value
