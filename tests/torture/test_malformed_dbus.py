"""Malformed D-Bus input to every method, property and object vfiod exports.

A seeded generator (the seed is printed) makes each call wrong in some way: hostile
strings, options vfiod must refuse, wrong signatures and variant types, unknown
members, interfaces and objects, Properties.Set on read-only properties, and calls with
no reply expected. Counted, and all zero: crashes, tracebacks or internal text reaching
a client or the log, host writes (every file of the simulated machine hashed before and
after), replies outside the documented error names, error texts over 1 kB.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from dbus_fast import Message, MessageType, Variant

from integration.helpers import Vfiod, client
from vfiod.daemon.bus import _WaitWhenFull

from .machine import changed, documented, fingerprint, internal_text
from .report import Sizes, Summary
from .surface import WRONG_SIGNATURES, Hostile, Method, call_message, introspect

SCENARIO = "malformed D-Bus"
#: Calls in flight at once (below the bus's per-connection limit of pending replies).
BATCH = 32
#: A longer error text echoes the caller's input back (issue 11.10).
MAX_ERROR_TEXT = 1000


@dataclass
class Tally:
    """What the calls got back."""

    calls: int = 0
    no_reply: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    undocumented: list[tuple[str, str]] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)
    oversized: list[str] = field(default_factory=list)
    wrong_signature_accepted: list[str] = field(default_factory=list)

    def check(self, what: str, reply: Message) -> None:
        """Count one reply."""
        if reply.message_type is MessageType.METHOD_RETURN:
            self.replies["success"] += 1
            if "wrong signature" in what:
                self.wrong_signature_accepted.append(what)
            return
        name = reply.error_name or "?"
        self.replies[name] += 1
        text = str(reply.body[0]) if reply.body else ""
        if not documented(name):
            self.undocumented.append((what, name))
        if internal_text(text):
            self.internal.append(f"{what}: {text[:200]}")
        if len(text) > MAX_ERROR_TEXT:
            self.oversized.append(f"{what}: {name} ({len(text)} chars)")


def _plan(rng: random.Random, hostile: Hostile, methods: list[Method],
          props: list[tuple[str, str, str]]) -> tuple[str, Message]:
    """One malformed call: (a description, the message)."""
    method = rng.choice(methods)
    mode = rng.randrange(7)
    no_reply = rng.random() < 0.05
    if mode <= 2 and method.in_signature:  # the right signature, hostile values
        return (f"{method.name}({method.in_signature}) hostile",
                call_message(method, method.in_signature, hostile.body(method.in_signature),
                             no_reply))
    if mode <= 4 or not method.in_signature:  # a wrong signature
        signature = rng.choice([s for s in WRONG_SIGNATURES if s != method.in_signature])
        return (f"{method.name}({signature}) wrong signature",
                call_message(method, signature, hostile.body(signature), no_reply))
    if mode == 5:  # Properties.Set on a real property, any variant
        path, iface, name = rng.choice(props)
        target = Method(path, "org.freedesktop.DBus.Properties", "Set", "ssv")
        return (f"Set {iface}.{name}",
                call_message(target, "ssv", [iface, name, hostile.variant()], no_reply))
    # Unknown member, interface or object, or hostile property names.
    choice = rng.randrange(4)
    if choice == 0:
        target = Method(method.path, method.interface, rng.choice(
            ["Nope", "bind", "Bind2", "_private", "__init__", "x" * 255]), "")
    elif choice == 1:
        target = Method(method.path, rng.choice(["org.vfiod1.Nope", "org.vfiod1.manager",
                                                 "a.b" + "c" * 200]), method.name, "")
    elif choice == 2:
        target = Method(rng.choice(["/", "/org", "/org/vfiod1/device",
                                    "/org/vfiod1/device/pci_0000_77_00_0",
                                    "/org/vfiod1/job/424242"]), method.interface,
                        method.name, method.in_signature)
    else:
        target = Method(method.path, "org.freedesktop.DBus.Properties",
                        rng.choice(["Get", "GetAll"]), "")
        signature = "ss" if target.name == "Get" else "s"
        return (f"Properties.{target.name} hostile names",
                call_message(target, signature, hostile.body(signature), no_reply))
    signature = target.in_signature
    return (f"{target.interface}.{target.name} at {target.path[:40]} unknown",
            call_message(target, signature, hostile.body(signature), no_reply))


async def _hammer(address: str, total: int, seed: int, tally: Tally) -> int:
    """Send *total* malformed calls; the number of methods the daemon exports."""
    rng = random.Random(seed)
    hostile = Hostile(seed)
    async with client(address) as bus:
        # dbus-fast's writer drops the connection when the socket buffer is full (a
        # batch of 100 kB strings fills it); vfiod's own wrapper makes it wait instead.
        bus._writer.sock = _WaitWhenFull(bus._writer.sock)
        surface = await introspect(bus)
        methods = surface.methods
        props = [(p.path, p.interface, p.name) for p in surface.properties]
        sent = 0
        while sent < total:
            batch = [_plan(rng, hostile, methods, props) for _ in range(min(BATCH, total - sent))]
            waiting = []
            for what, msg in batch:
                if msg.flags.value:
                    await bus.send(msg)
                    tally.no_reply += 1
                else:
                    waiting.append((what, bus.call(msg)))
            for (what, _), reply in zip(waiting, await asyncio.gather(*(c for _, c in waiting)),
                                        strict=True):
                tally.check(what, reply)
            sent += len(batch)
            tally.calls = sent
        # Still alive and answering after it all.
        ping = await bus.call(Message(destination="org.vfiod1", path="/org/vfiod1",
                                      interface="org.vfiod1.Manager", member="Status"))
        assert ping.message_type is MessageType.METHOD_RETURN, ping.body
        return len({(m.path.startswith("/org/vfiod1/device"), m.interface, m.name)
                    for m in methods})


def test_malformed_calls_to_every_method_crash_nothing_and_write_nothing(
        vfiod: Vfiod, sizes: Sizes, summary: Summary) -> None:
    seed = int(os.environ.get("VFIOD_TORTURE_SEED", time.time_ns() % 1_000_000))
    print(f"seed {seed} (VFIOD_TORTURE_SEED={seed} repeats this run)")
    before = fingerprint(vfiod.sim_root)
    tally = Tally()
    started = time.monotonic()
    kinds = asyncio.run(_hammer(vfiod.address, sizes.dbus_calls, seed, tally))
    seconds = time.monotonic() - started
    assert vfiod.proc is not None
    crashed = int(vfiod.proc.poll() is not None)
    writes = changed(before, fingerprint(vfiod.sim_root))
    log = vfiod.log()
    log_tracebacks = log.count("Traceback") + log.count("unexpected exception")

    summary.add(SCENARIO, "calls (seed %d)" % seed, tally.calls)
    summary.add(SCENARIO, "of them with no reply expected", tally.no_reply)
    summary.add(SCENARIO, "method kinds covered (by introspection)", kinds)
    summary.add(SCENARIO, "calls per second", tally.calls / seconds)
    summary.add(SCENARIO, "daemon crashes", crashed, must_be_zero=True)
    summary.add(SCENARIO, "tracebacks or internal text to a client", len(tally.internal),
                must_be_zero=True)
    summary.add(SCENARIO, "tracebacks in the daemon's log", log_tracebacks, must_be_zero=True)
    summary.add(SCENARIO, "host writes (files changed)", len(writes), must_be_zero=True)
    summary.add(SCENARIO, "replies outside the documented error names",
                len(tally.undocumented), must_be_zero=True)
    summary.add(SCENARIO, f"error texts over {MAX_ERROR_TEXT} characters",
                len(tally.oversized), must_be_zero=True)
    summary.add(SCENARIO, "calls with a wrong signature answered as if right",
                len(tally.wrong_signature_accepted), must_be_zero=True)
    print("replies:", dict(tally.replies.most_common()))
    assert not crashed
    assert tally.internal == []
    assert log_tracebacks == 0, log[-3000:]
    assert writes == []
    assert tally.undocumented == []
    assert tally.oversized == [], tally.oversized[:5]
    assert tally.wrong_signature_accepted == [], sorted(set(tally.wrong_signature_accepted))
