"""The exported Device objects, kept in step with the engine.

``sync(addresses)`` reads the status of those functions (or of every one) on a worker
thread and compares it with what is exported: new functions are exported (InterfacesAdded), gone ones unexported
(InterfacesRemoved), changed ones emit PropertiesChanged with only the changed values,
and every change of state or driver emits Manager.DeviceChanged, whoever caused it.
Concurrent callers share runs: a caller returns after a run that began after its call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from vfiod.contract import MANAGER_PATH, device_path
from vfiod.daemon import gc_freeze
from vfiod.daemon.bus import ObjectManagerBus
from vfiod.daemon.log import fields, log
from vfiod.daemon.service import (
    DEVICE_CHANGED_SIGNATURE,
    DeviceInterface,
    ManagerInterface,
)
from vfiod.records import DeviceStatus

#: What the view is built from: statuses (of every function, or of the ones asked
#: for), and config names by address.
Snapshot = tuple[list[DeviceStatus], dict[str, str]]


class DeviceView:
    """The Device objects on the bus and the last status of every function."""

    def __init__(self, bus: ObjectManagerBus, manager: ManagerInterface,
                 read: Callable[[set[str] | None], Snapshot],
                 make_device: Callable[[DeviceStatus, str], DeviceInterface],
                 on_synced: Callable[[list[DeviceStatus]], None] | None = None) -> None:
        self.bus = bus
        self.manager = manager
        self.read = read
        self.make_device = make_device
        self.on_synced = on_synced
        self.objects: dict[str, DeviceInterface] = {}
        self._by_address: dict[str, DeviceStatus] = {}
        self._sorted: list[DeviceStatus] | None = []
        self._lock = asyncio.Lock()
        self._requested = 0
        self._done = 0
        #: Addresses asked for since the last run began; None: every function.
        self._pending: set[str] | None = set()

    @property
    def statuses(self) -> list[DeviceStatus]:
        """The last status of every function, sorted by address (what Status returns)."""
        if self._sorted is None:
            self._sorted = [self._by_address[a] for a in sorted(self._by_address)]
        return self._sorted

    async def sync(self, addresses: Iterable[str] | None = None) -> None:
        """Bring the objects of these functions (or of every one) in step with the engine."""
        if self._pending is not None:
            if addresses is None:
                self._pending = None
            else:
                self._pending.update(addresses)
        self._requested += 1
        wanted = self._requested
        async with self._lock:
            if self._done >= wanted:
                return  # a run that began after our call has finished meanwhile
            covers = self._requested
            pending, self._pending = self._pending, set()
            statuses, names = await asyncio.to_thread(self.read, pending)
            self.apply(statuses, names, pending)
            self._done = covers

    def apply(self, statuses: list[DeviceStatus], names: dict[str, str] | None = None,
              addresses: set[str] | None = None) -> None:
        """Export, unexport and emit for the difference between *statuses* and now.

        *names*: config-file names by address (absent: none). *addresses*: the
        functions *statuses* covers (a function among them without a status is gone);
        None: every function.
        """
        names = names or {}
        fresh = {s.address: s for s in statuses}
        if addresses is None:
            gone = [a for a in self.objects if a not in fresh]
        else:
            gone = [a for a in addresses if a in self.objects and a not in fresh]
        for address in gone:
            self.bus.unexport(device_path(address), self.objects.pop(address))
            log.info("%s: gone", address, extra=fields(address))
        first = not self._by_address
        for address, status in fresh.items():
            old = self._by_address.get(address)
            obj = self.objects.get(address)
            name = names.get(address, "")
            if obj is None:
                obj = self.objects[address] = self.make_device(status, name)
                self.bus.export(device_path(address), obj)
                if not first:  # not the first export at start
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
        if addresses is None:
            self._by_address = fresh
        else:
            for address in gone:
                self._by_address.pop(address, None)
            self._by_address.update(fresh)
        self._sorted = None
        if gone:  # an unexported object is only freed by a collection that sees it
            gc_freeze.collect_frozen()
        if self.on_synced is not None:
            self.on_synced(self.statuses)

    def get(self, address: str) -> DeviceStatus | None:
        """The last status of one function."""
        return self._by_address.get(address)
