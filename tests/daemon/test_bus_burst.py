"""The daemon's bus connection survives a burst of signals larger than the socket buffer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from dbus_fast.service import ServiceInterface, dbus_property
from dbus_fast.constants import PropertyAccess

from vfiod.daemon.bus import ObjectManagerBus
from vfiod.privatebus import PrivateBus


class _Thing(ServiceInterface):
    def __init__(self, n: int) -> None:
        super().__init__("org.vfiod1.Test")
        self.n = n

    @dbus_property(access=PropertyAccess.READ)
    def Text(self) -> "s":  # noqa: N802, F821 (a D-Bus signature, not a type)
        return f"{self.n:06d} " + "x" * 400


@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    with PrivateBus() as private:
        yield private


def test_thousands_of_interfaces_added_at_once_keep_the_connection(bus: PrivateBus) -> None:
    async def scenario() -> bool:
        conn = await ObjectManagerBus(bus_address=bus.address).connect()
        conn.announce = True
        try:
            for n in range(2000):  # about 1 MB of InterfacesAdded, no reader hurrying
                conn.export(f"/org/vfiod1/device/t{n}", _Thing(n))
            # The barrier: the bus answers this call only after every signal queued
            # before it went through the same socket; a dropped connection never answers.
            reply = await asyncio.wait_for(conn.request_name("org.vfiod1"), 10)
            return conn.connected and reply is not None
        finally:
            conn.disconnect()

    assert asyncio.run(scenario())
