"""``vfioctl bind|unbind|reset --dry-run``: what the operation would do, from Manager.Plan.

The plan is printed (readably, or as one JSON object with ``--json``) and the exit
status is the one the real call would give: 0, or the code of the error it would
raise (that error also ends on stderr as one line, as a real refusal does).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from vfiod.ctl import exitcodes, output
from vfiod.ctl.client import VfiodClient
from vfiod.ctl.exitcodes import CtlError
from vfiod.ctl.jobs import job_options
from vfiod.printable import printable

#: The plan's name of VFIO's hot reset rung, and how it is shown.
HOT_RESET = "hot_reset"


@dataclass(frozen=True)
class ShownPlan:
    """Manager.Plan's reply, by name."""

    operation: str
    address: str
    members: list[tuple[str, str, str, str]]
    guards: list[tuple[str, str, str]]
    rungs: list[str]
    modules: list[str]
    error: str
    message: str

    @classmethod
    def from_reply(cls, operation: str, reply: list[Any]) -> ShownPlan:
        """From Plan's out arguments (sa(ssss)a(sss)asasss), made printable."""
        address, members, guards, rungs, modules, error, message = reply
        text = lambda v: printable(str(v))  # noqa: E731
        return cls(operation, text(address),
                   [tuple(text(x) for x in m) for m in members],  # type: ignore[misc]
                   [tuple(text(x) for x in g) for g in guards],  # type: ignore[misc]
                   [text(r) for r in rungs], [text(m) for m in modules],
                   text(error), text(message))

    @property
    def moves(self) -> list[str]:
        """The addresses that would move."""
        return [m[0] for m in self.members if not m[3]]

    def to_json(self) -> dict[str, Any]:
        """The plan as a JSON object."""
        return {
            "operation": self.operation, "device": self.address,
            "members": [{"address": a, "from": f, "to": t, "note": n}
                        for a, f, t, n in self.members],
            "guards": [{"address": a, "kind": k, "reason": r} for a, k, r in self.guards],
            "rungs": self.rungs, "modules": self.modules,
            "error": {"name": self.error, "message": self.message} if self.error else None,
        }


def plan_options(args: argparse.Namespace) -> dict[str, bool]:
    """The operation's options, as the real call would send them (those a plan
    depends on: a dry run waits for nothing nor lifts a quarantine)."""
    return {key: variant.value for key, variant in job_options(args).items()
            if key in ("group", "force")}


def plan_lines(plan: ShownPlan) -> list[str]:
    """The plan, readably: one line per member, guard, rung list and module list, then
    what the call would answer."""
    lines = [f"dry run: {plan.operation} {plan.address} (nothing is changed)"]
    for address, was, will, note in plan.members:
        if note:
            lines.append(f"  {address}  {was or 'no driver'}: {note}")
        else:
            lines.append(f"  {address}  {was or 'no driver'} -> {will or 'no driver'}")
    for address, kind, reason in plan.guards:
        how = "refuses always" if kind == "hard" else "refuses unless --force"
        lines.append(f"  guard ({kind}, {how}): {address}: {reason}")
    if plan.rungs:
        shown = [f"{r} (VFIO's hot reset of the bus)" if r == HOT_RESET else r
                 for r in plan.rungs]
        lines.append("  would try, in order: " + ", ".join(shown))
    if plan.modules:
        lines.append("  would load: " + ", ".join(plan.modules))
    if plan.error:
        lines.append(f"  would refuse: {plan.message}")
    elif plan.operation == "reset":
        lines.append(f"  would reset it, trying {plan.rungs[0]} first")
    elif plan.moves:
        lines.append("  would move: " + ", ".join(plan.moves))
    else:
        lines.append("  would move nothing")
    return lines


async def cmd_dry_run(client: VfiodClient, args: argparse.Namespace) -> int:
    """``bind|unbind|reset DEVICE --dry-run [--json]``."""
    reply = await client.plan(args.command, args.device, plan_options(args))
    plan = ShownPlan.from_reply(args.command, reply)
    if args.json:
        sys.stdout.write(output.to_json(plan.to_json()))
    else:
        for line in plan_lines(plan):
            print(line)
    sys.stdout.flush()
    if plan.error:
        raise CtlError(plan.message, exitcodes.exit_code_for(plan.error), plan.error)
    return exitcodes.OK
