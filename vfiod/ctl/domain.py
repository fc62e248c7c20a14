"""``vfioctl check-domain FILE|-``: a libvirt domain's PCI devices, checked before it starts.

The domain XML is read with the libvirt hook's own parser (vfiod.libvirt_hook
.domain_hostdevs: every ``<hostdev type='pci'>`` and ``<interface type='hostdev'>``,
each address once), before any bus traffic; vfiod's CheckDevices then checks the set.
A hostdev without a readable PCI address is an error of its own, as it refuses the
domain in the hook. Exit status 0 when no row is an error (warnings allowed), 1 when
one is; 2 for a file that cannot be read or parsed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

from vfiod.ctl import exitcodes
from vfiod.ctl.client import VfiodClient
from vfiod.ctl.exitcodes import CtlError
from vfiod.errors import InvalidArgument
from vfiod.printable import printable

#: A domain XML is a few kB; more than this is not one.
MAX_DOMAIN_BYTES = 4 << 20


@dataclass
class Domain:
    """The PCI devices of one domain XML, and the hostdevs whose address is unreadable."""

    addresses: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_domain(file: str) -> Domain:
    """Read and parse FILE (``-``: stdin); CtlError exit 2 when it cannot be."""
    try:
        if file == "-":
            data = sys.stdin.buffer.read(MAX_DOMAIN_BYTES + 1)
        else:
            with open(file, "rb") as f:
                data = f.read(MAX_DOMAIN_BYTES + 1)
    except OSError as exc:
        raise _usage(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > MAX_DOMAIN_BYTES:
        raise _usage(f"{file}: larger than {MAX_DOMAIN_BYTES >> 20} MiB: not a domain XML")
    from vfiod.libvirt_hook import domain_hostdevs

    try:
        devices, problems = domain_hostdevs(data.decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise _usage(f"{file}: {exc}") from None
    return Domain([address for address, _managed in devices], problems)


def _usage(message: str) -> CtlError:
    return CtlError(message, exitcodes.USAGE, InvalidArgument.dbus_name)


def check_rows(domain: Domain, rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Every row to show: the unreadable hostdevs first, then vfiod's."""
    unreadable = [("", "error", f"{p}; fix: give it a full <address domain='0x0000' "
                   "bus='0x06' slot='0x00' function='0x0'/> inside <source>")
                  for p in domain.problems]
    return unreadable + rows


async def cmd_check_domain(client: VfiodClient, args: argparse.Namespace) -> int:
    """``check-domain FILE|- [--json]``."""
    domain: Domain = args.domain
    rows = await client.check_devices(domain.addresses) if domain.addresses else []
    rows = check_rows(domain, rows)
    if args.json:
        sys.stdout.write(json.dumps([{"device": d, "severity": s, "message": m}
                                     for d, s, m in rows], indent=2, ensure_ascii=False)
                         + "\n")
    else:
        for line in check_lines(rows):
            print(line)
    errors = sum(1 for _d, severity, _m in rows if severity == "error")
    return exitcodes.FAILED if errors else exitcodes.OK


def check_lines(rows: list[tuple[str, str, str]]) -> list[str]:
    """One line per row (``ok``, ``warning``, ``error``), then a summary line."""
    if not rows:
        return ["the domain has no PCI host device: nothing to check"]
    lines = [f"{severity:<7}  {printable(message)}" for _device, severity, message in rows]
    errors = sum(1 for _d, s, _m in rows if s == "error")
    warnings = sum(1 for _d, s, _m in rows if s == "warning")
    if errors:
        lines.append(f"{errors} error(s), {warnings} warning(s): the guest would not "
                     "start through the libvirt hook; fix each error above")
    else:
        lines.append(f"ready: every device can go to the guest"
                     + (f" ({warnings} warning(s))" if warnings else ""))
    return lines
