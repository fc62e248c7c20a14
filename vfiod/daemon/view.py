"""The exported Device objects, kept in step with the engine.

``sync()`` reads ``engine.status()`` on a worker thread and compares it with what is
exported: new functions are exported (InterfacesAdded), gone ones unexported
(InterfacesRemoved), changed ones emit PropertiesChanged with only the changed values,
and every change of state or driver emits Manager.DeviceChanged, whoever caused it.
Concurrent callers share runs: a caller returns after a run that began after its call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from vfiod.daemon import heap
from vfiod.daemon.bus import MANAGER_PATH, ObjectManagerBus
from vfiod.daemon.log import fields, log
from vfiod.daemon.service import (
    DEVICE_CHANGED_SIGNATURE,
    DeviceInterface,
    ManagerInterface,
    device_path,
)
from vfiod.records import DeviceStatus

#: What the view is built from: every function's status, and config names by address.
Snapshot = tuple[list[DeviceStatus], dict[str, str]]


class DeviceView:
    """The Device objects on the bus and the last status of every function."""

    def __init__(self, bus: ObjectManagerBus, manager: ManagerInterface,
                 read: Callable[[], Snapshot],
                 make_device: Callable[[DeviceStatus, str], DeviceInterface],
                 on_synced: Callable[[list[DeviceStatus]], None] | None = None) -> None:
        self.bus = bus
        self.manager = manager
        self.read = read
        self.make_device = make_device
        self.on_synced = on_synced
        #: The last status of every function, sorted by address (what Status returns).
        self.statuses: list[DeviceStatus] = []
        self.objects: dict[str, DeviceInterface] = {}
        self._by_address: dict[str, DeviceStatus] = {}
        self._lock = asyncio.Lock()
        self._requested = 0
        self._done = 0

    async def sync(self) -> None:
        """Bring the objects in step with the engine's current view."""
        self._requested += 1
        wanted = self._requested
        async with self._lock:
            if self._done >= wanted:
                return  # a run that began after our call has finished meanwhile
            covers = self._requested
            statuses, names = await asyncio.to_thread(self.read)
            self.apply(statuses, names)
            self._done = covers

    def apply(self, statuses: list[DeviceStatus], names: dict[str, str] | None = None) -> None:
        """Export, unexport and emit for the difference between *statuses* and now.

        *names*: config-file names by address (absent: none).
        """
        names = names or {}
        fresh = {s.address: s for s in statuses}
        gone = [a for a in self.objects if a not in fresh]
        for address in gone:
            self.bus.unexport(device_path(address), self.objects.pop(address))
            log.info("%s: gone", address, extra=fields(address))
        for address, status in fresh.items():
            old = self._by_address.get(address)
            obj = self.objects.get(address)
            name = names.get(address, "")
            if obj is None:
                obj = self.objects[address] = self.make_device(status, name)
                self.bus.export(device_path(address), obj)
                if self._by_address:  # not the first export at start
                    log.info("%s: appeared (%s, %s)", address, status.name,
                             status.driver or "no driver", extra=fields(address))
            else:
                changed = obj.update(status, name)
                if changed:
                    self.bus.send_properties_changed(obj.path, obj.name, changed)
            if old is None or old.state != status.state or old.driver != status.driver:
                if old is not None:
                    log.info("%s: %s on %s -> %s on %s", address, old.state.value,
                             old.driver or "no driver", status.state.value,
                             status.driver or "no driver", extra=fields(address))
                    self.bus.send_signal(MANAGER_PATH, self.manager.name, "DeviceChanged",
                                         DEVICE_CHANGED_SIGNATURE,
                                         [address, status.state.value, status.driver])
        self._by_address = fresh
        self.statuses = sorted(statuses, key=lambda s: s.address)
        if gone:  # an unexported object is only freed by a collection that sees it
            heap.collect_frozen()
        if self.on_synced is not None:
            self.on_synced(self.statuses)

    def get(self, address: str) -> DeviceStatus | None:
        """The last status of one function."""
        return self._by_address.get(address)
