"""A reset holds every IOMMU group on its device's bus (VFIO's hot reset resets them all),
taken in one order, on the seed-x99-shared-bus machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from .helpers import Vfiod, call, client, knobs, sim_driver

PORT0, PORT1 = "0000:0e:00.0", "0000:0e:00.1"  # one bus, IOMMU groups 42 and 43
SLOW = 2.0  # seconds the kernel takes over PORT0's driver_override, once


def _started(make_vfiod: Callable[..., Vfiod]) -> Vfiod:
    return make_vfiod(profile="seed-x99-shared-bus", **knobs(delay=[{
        "path": f"/sys/bus/pci/devices/{PORT0}/driver_override", "seconds": SLOW,
        "times": 1}])).start()


async def _until_busy(bus: MessageBus, address: str) -> None:
    """Return once Status shows *address* busy (its operation holds its group)."""
    for _ in range(100):
        reply = await call(bus, "Status")
        if any(row[0] == address and row[4] == "busy" for row in reply.body[0]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{address} never showed busy")


def test_reset_waits_for_an_operation_on_another_group_sharing_its_bus(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = _started(make_vfiod)

    async def scenario() -> tuple[Message, Message, float]:
        async with client(daemon.address) as bus:
            assert (await call(bus, "Bind", "sa{sv}", [PORT1, {}])).body == [[PORT1]]
            began = time.monotonic()
            bind = asyncio.ensure_future(call(bus, "Bind", "sa{sv}", [PORT0, {}]))
            await _until_busy(bus, PORT0)
            # PORT1 has no reset of its own: only the bus, shared with PORT0's group.
            reset = await call(bus, "Reset", "sa{sv}", [PORT1, {}])
            return await bind, reset, time.monotonic() - began

    bound, reset, reset_took = asyncio.run(scenario())
    assert bound.message_type is MessageType.METHOD_RETURN, bound.body
    assert reset.message_type is MessageType.METHOD_RETURN, reset.body
    # Run while PORT0 was half-way, the hot reset would have found it off vfio-pci.
    assert reset.body == ["bus"]
    assert reset_took >= SLOW
    assert sim_driver(daemon.sim_root, PORT0) == sim_driver(daemon.sim_root, PORT1) == "vfio-pci"


def test_resets_from_both_groups_of_one_bus_at_once_both_finish(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = _started(make_vfiod)

    async def scenario() -> list[list[str]]:
        async with client(daemon.address) as bus:
            for port in (PORT0, PORT1):
                assert (await call(bus, "Bind", "sa{sv}", [port, {}])).body == [[port]]
            replies = await asyncio.wait_for(asyncio.gather(
                *(call(bus, "Reset", "sa{sv}", [port, {}])
                  for port in (PORT1, PORT0, PORT1, PORT0))), timeout=30)
            return [r.body for r in replies]

    assert asyncio.run(scenario()) == [["bus"]] * 4
