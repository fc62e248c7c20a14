"""The object of a function that went away is freed, though start-up froze it."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

from vfiod.privatebus import PrivateBus

from .helpers import SignalRecorder, client, device_path
from .inprocess import vfiod_in_process

ASMEDIA_USB = "0000:11:00.0"


def test_the_object_of_a_removed_function_is_freed(private_bus: PrivateBus,
                                                   tmp_path: Path) -> None:
    async def scenario() -> bool:
        async with (vfiod_in_process(private_bus, tmp_path) as daemon,
                    client(private_bus.address) as bus):
            signals = await SignalRecorder(bus).start()
            assert daemon.view is not None
            usb = weakref.ref(daemon.view.objects[ASMEDIA_USB])
            remove = tmp_path / f"sim/sys/bus/pci/devices/{ASMEDIA_USB}/remove"
            await asyncio.to_thread(remove.write_text, "1")
            await signals.wait(lambda: any(
                m.member == "InterfacesRemoved" and m.body[0] == device_path(ASMEDIA_USB)
                for m in signals.messages))
            return usb() is None

    assert asyncio.run(scenario())
