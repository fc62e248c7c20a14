"""The exported view follows the addresses it is given: it reads, exports and emits for
those, and leaves every other object alone."""

from __future__ import annotations

import asyncio
from typing import Any

from vfiod.contract import device_path
from vfiod.daemon.view import DeviceView
from vfiod.records import DeviceStatus, State

GPU, AUDIO, NIC = "0000:06:00.0", "0000:06:00.1", "0000:00:19.0"


def _status(address: str, state: State = State.HOST, driver: str = "nvidia") -> DeviceStatus:
    return DeviceStatus(address=address, vendor_id=0x10de, device_id=0x1b06, name="GPU",
                        class_code=0x030000, driver=driver, host_driver=driver, state=state,
                        iommu_group=31, holder="", holder_pid=0, reset_methods=[],
                        healthy=True, boot_vga=False, is_bridge=False)


class _Bus:
    def __init__(self) -> None:
        self.exported: list[str] = []
        self.unexported: list[str] = []
        self.signals: list[list[Any]] = []

    def export(self, path: str, obj: object) -> None:
        self.exported.append(path)

    def unexport(self, path: str, obj: object) -> None:
        self.unexported.append(path)

    def send_properties_changed(self, path: str, name: str, changed: dict[str, Any]) -> None:
        pass

    def send_signal(self, path: str, interface: str, member: str, signature: str,
                    body: list[Any]) -> None:
        self.signals.append(body)


class _Object:
    def __init__(self, status: DeviceStatus) -> None:
        self.path, self.name = status.address, "org.vfiod1.Device"

    def update(self, status: DeviceStatus, name: str) -> dict[str, Any]:
        return {}


class _Manager:
    name = "org.vfiod1.Manager"


def _view(machine: dict[str, DeviceStatus],
          asked: list[set[str] | None]) -> tuple[DeviceView, _Bus]:
    bus = _Bus()

    def read(addresses: set[str] | None) -> tuple[list[DeviceStatus], dict[str, str]]:
        asked.append(None if addresses is None else set(addresses))
        chosen = machine if addresses is None else {a: s for a, s in machine.items()
                                                     if a in addresses}
        return list(chosen.values()), {}

    view = DeviceView(bus, _Manager(), read, lambda s, n: _Object(s))  # type: ignore[arg-type]
    return view, bus


def test_a_sync_of_some_addresses_reads_and_signals_only_those() -> None:
    machine = {a: _status(a) for a in (GPU, AUDIO, NIC)}
    asked: list[set[str] | None] = []
    view, bus = _view(machine, asked)

    async def scenario() -> None:
        await view.sync()
        machine[GPU] = _status(GPU, State.VFIO, "vfio-pci")
        machine[NIC] = _status(NIC, State.VFIO, "vfio-pci")  # changed, but not asked for
        await view.sync([GPU, AUDIO])

    asyncio.run(scenario())
    assert asked == [None, {GPU, AUDIO}]
    assert bus.signals == [[GPU, "vfio", "vfio-pci"]]
    assert [s.address for s in view.statuses] == [NIC, GPU, AUDIO]
    assert view.get(NIC).state is State.HOST  # type: ignore[union-attr]


def test_an_asked_address_the_host_no_longer_has_is_unexported() -> None:
    machine = {a: _status(a) for a in (GPU, AUDIO)}
    view, bus = _view(machine, [])

    async def scenario() -> None:
        await view.sync()
        del machine[AUDIO]
        await view.sync([AUDIO])

    asyncio.run(scenario())
    assert bus.unexported == [device_path(AUDIO)]
    assert [s.address for s in view.statuses] == [GPU]
