"""Many clients at once: conflicting Bind, Unbind and Reset on the same and on different
IOMMU groups, and Status, for a while.

Counted: calls, answers, D-Bus timeouts (none: every call is answered), spurious
failures (an internal error, a timeout, or a failure that is none of the answers the
call may rightly get), and Status latency (p50, p99). At the end vfiod's Status agrees
with the simulated kernel's model for every function, and nothing is busy, in error,
or left in the journal.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter

from dbus_fast import Message, MessageType

from integration.helpers import Vfiod, call, client, options, sim_driver

from .report import Sizes, Summary

SCENARIO = "concurrent clients"
#: Functions of five IOMMU groups: two GPUs with their audio, onboard audio, a USB
#: controller, the sSATA controller.
TARGETS = ["0000:06:00.0", "0000:06:00.1", "0000:09:00.0", "0000:09:00.1", "0000:00:1b.0",
           "0000:11:00.0", "0000:00:11.4"]
#: One function of each of those groups.
GROUPS = ["0000:06:00.0", "0000:09:00.0", "0000:00:1b.0", "0000:11:00.0", "0000:00:11.4"]
#: Answers a conflicting operation may rightly get: a reset the device cannot do where
#: it is now (a GPU whose only method is the bus reset, on its host driver), a function
#: already held by the other operation's group (none expected, but the message names it).
RIGHTFUL = {"org.vfiod1.Error.ResetFailed", "org.vfiod1.Error.InUse",
            "org.vfiod1.Error.GroupNotViable"}
#: A call is answered within this or counted as a D-Bus timeout.
CALL_TIMEOUT = 60.0


async def _client(address: str, seed: int, until: float, counts: Counter[str],
                  status_ms: list[float], spurious: list[str]) -> None:
    rng = random.Random(seed)
    async with client(address) as bus:
        while time.monotonic() < until:
            if rng.random() < 0.35:
                started = time.monotonic()
                try:
                    reply = await asyncio.wait_for(call(bus, "Status"), CALL_TIMEOUT)
                except TimeoutError:
                    counts["D-Bus timeouts"] += 1
                    continue
                status_ms.append((time.monotonic() - started) * 1000)
                counts["Status"] += 1
                if reply.message_type is not MessageType.METHOD_RETURN:
                    spurious.append(f"Status: {reply.error_name}: {reply.body}")
                continue
            member = rng.choice(["Bind", "Unbind", "Reset"])
            device = rng.choice(TARGETS)
            try:
                reply = await asyncio.wait_for(
                    call(bus, member, "sa{sv}", [device, options()]), CALL_TIMEOUT)
            except TimeoutError:
                counts["D-Bus timeouts"] += 1
                continue
            counts[member] += 1
            if reply.message_type is MessageType.METHOD_RETURN:
                counts["succeeded"] += 1
            elif reply.error_name in RIGHTFUL:
                counts["refused rightly"] += 1
                counts[f"refused: {reply.error_name}"] += 1
            else:
                spurious.append(f"{member} {device}: {reply.error_name}: {reply.body}")


async def _race(address: str, clients: int, seconds: float, counts: Counter[str],
                status_ms: list[float], spurious: list[str]) -> None:
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(address, n, until, counts, status_ms, spurious)
                           for n in range(clients)))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_many_clients_racing_get_every_call_answered_and_leave_a_consistent_machine(
        vfiod: Vfiod, sizes: Sizes, summary: Summary) -> None:
    counts: Counter[str] = Counter()
    status_ms: list[float] = []
    spurious: list[str] = []
    initial = vfiod.status()
    asyncio.run(_race(vfiod.address, sizes.clients, sizes.race_seconds, counts, status_ms,
                      spurious))

    status = vfiod.status()
    disagree = [a for a, row in status.items() if row["driver"] != sim_driver(vfiod.sim_root, a)]
    busy = [a for a, row in status.items() if row["state"] == "busy"]
    # "error" is the right state after a refused reset; an Unbind of every group must
    # then work and leave each function on its host driver.
    unbinds = [vfiod.call("Unbind", "sa{sv}", a, "0") for a in GROUPS]
    failed_unbinds = [r.stderr.strip() for r in unbinds if r.returncode != 0]
    status = vfiod.status()
    unsettled = busy + [a for a, row in status.items() if row["state"] in ("busy", "error")]
    disagree += [a for a in TARGETS if status[a]["state"] != initial[a]["state"]
                 or status[a]["driver"] != initial[a]["driver"]
                 or status[a]["driver"] != sim_driver(vfiod.sim_root, a)]
    journal = list(vfiod.state_dir.glob("txn-*.json"))
    log = vfiod.log()
    assert vfiod.proc is not None and vfiod.proc.poll() is None

    operations = counts["Bind"] + counts["Unbind"] + counts["Reset"]
    name = f"{SCENARIO} ({sizes.clients} for {sizes.race_seconds:g} s)"
    summary.add(name, "Bind/Unbind/Reset calls", operations)
    summary.add(name, "of them succeeded", counts["succeeded"])
    for refusal in sorted(k for k in counts if k.startswith("refused: ")):
        summary.add(name, f"of them {refusal.removeprefix('org.vfiod1.Error.')}", counts[refusal])
    summary.add(name, "Status calls", counts["Status"])
    summary.add(name, "Status p50 (ms)", _percentile(status_ms, 0.50))
    summary.add(name, "Status p99 (ms)", _percentile(status_ms, 0.99))
    summary.add(name, "D-Bus timeouts (calls not answered)", counts["D-Bus timeouts"],
                must_be_zero=True)
    summary.add(name, "spurious failures", len(spurious), must_be_zero=True)
    summary.add(name, "functions where Status and the kernel disagree", len(disagree),
                must_be_zero=True)
    summary.add(name, "functions left busy (or in error after an Unbind)", len(unsettled),
                must_be_zero=True)
    summary.add(name, "Unbinds failing after the race", len(failed_unbinds), must_be_zero=True)
    summary.add(name, "transactions left in the journal", len(journal), must_be_zero=True)
    summary.add(name, "tracebacks in the daemon's log", log.count("Traceback"),
                must_be_zero=True)
    print(f"Status p50 {_percentile(status_ms, 0.5):.1f} ms, "
          f"p99 {_percentile(status_ms, 0.99):.1f} ms over {len(status_ms)} calls; {counts}")
    assert counts["D-Bus timeouts"] == 0
    assert spurious == [], spurious[:5]
    assert disagree == [] and unsettled == [] and journal == [], (
        disagree, unsettled, journal, failed_unbinds,
        {a: (status[a], sim_driver(vfiod.sim_root, a)) for a in set(disagree + unsettled)})
    assert failed_unbinds == []
    assert "Traceback" not in log, log[-3000:]
    assert operations > sizes.clients  # they really raced
