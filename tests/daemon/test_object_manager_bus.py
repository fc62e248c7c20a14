"""The bus connection's own GetManagedObjects, and the values the Device objects keep for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property

from vfiod.daemon.bus import ObjectManagerBus, PropertiesInterface
from vfiod.daemon.service import DeviceInterface, ManagerInterface, device_properties
from vfiod.privatebus import PrivateBus
from vfiod.records import DeviceStatus, State

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

GPU = DeviceStatus(address="0000:06:00.0", vendor_id=0x10DE, device_id=0x1B06,
                   name="GP102 [GeForce GTX 1080 Ti]", class_code=0x030000, driver="nvidia",
                   host_driver="nvidia", state=State.HOST, iommu_group=31, holder="",
                   holder_pid=0, reset_methods=["flr", "bus"], healthy=True, boot_vga=False,
                   is_bridge=False)


class _Lamp(PropertiesInterface):
    """A PropertiesInterface: the bus reads it through property_values."""

    def __init__(self, colour: str) -> None:
        super().__init__("org.vfiod1.Lamp")
        self.values: dict[str, Any] = {"Colour": colour, "Watts": 40}

    def property_values(self) -> dict[str, Any]:
        return self.values

    @dbus_property(access=PropertyAccess.READ, name="Watts")
    def watts(self) -> Annotated[int, DBusSignature("u")]:
        return self.values["Watts"]

    @dbus_property(access=PropertyAccess.READ, name="Colour")
    def colour(self) -> Annotated[str, DBusSignature("s")]:
        return self.values["Colour"]


class _Plain(ServiceInterface):
    """A plain ServiceInterface: only dbus-fast knows how to read it."""

    def __init__(self) -> None:
        super().__init__("org.vfiod1.Plain")

    @dbus_property(access=PropertyAccess.READ, name="Text")
    def text(self) -> Annotated[str, DBusSignature("s")]:
        return "plain"


class _FakeDaemon:
    iommu_enabled = True
    simulated = True


@pytest.fixture(scope="module")
def private_bus() -> Iterator[PrivateBus]:
    with PrivateBus() as bus:
        yield bus


def served(private_bus: PrivateBus,
           scenario: Callable[[ObjectManagerBus, MessageBus], Awaitable[Any]]) -> Any:
    """Run *scenario* with a serving ObjectManagerBus and a client, both connected."""
    async def run() -> Any:
        server = await ObjectManagerBus(bus_address=private_bus.address).connect()
        client = await MessageBus(bus_address=private_bus.address).connect()
        try:
            # The bus policy lets clients call org.vfiod1 only.
            await server.request_name("org.vfiod1")
            return await scenario(server, client)
        finally:
            for bus in (client, server):  # the name is free again once the bus says so
                bus.disconnect()
                await bus.wait_for_disconnect()

    return asyncio.run(run())


async def managed_objects(client: MessageBus, path: str = "/org/vfiod1") -> dict[str, Any]:
    reply = await client.call(Message(destination="org.vfiod1", path=path,
                                      interface=OBJECT_MANAGER, member="GetManagedObjects"))
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    return reply.body[0]


def test_device_properties_are_the_readable_properties_dbus_fast_serves() -> None:
    device = DeviceInterface(None, GPU, "gpu")  # type: ignore[arg-type]
    introspected = [(p.name, p.signature) for p in device.introspect().properties]
    assert list(device.readable_properties()) == introspected
    assert set(device_properties(GPU, "gpu")) == {name for name, _ in introspected}
    assert {k: v.value for k, v in device.property_variants().items()} == \
        device_properties(GPU, "gpu")


def test_manager_property_values_are_what_its_getters_return() -> None:
    manager = ManagerInterface(_FakeDaemon())  # type: ignore[arg-type]
    names = [p.name for p in manager.introspect().properties]
    assert sorted(manager.property_values()) == sorted(names)
    assert manager.property_values() == {"Version": manager.version, "IommuEnabled": True,
                                         "Simulated": True}


def test_update_with_an_equal_status_reports_no_change() -> None:
    device = DeviceInterface(None, GPU, "gpu")  # type: ignore[arg-type]
    assert device.update(GPU.model_copy(), "gpu") == {}


def test_update_reports_the_changed_values_and_keeps_the_variants_in_step() -> None:
    device = DeviceInterface(None, GPU, "")  # type: ignore[arg-type]
    before = device.property_variants()
    bound = GPU.model_copy(update={"driver": "vfio-pci", "state": State.VFIO})
    changed = device.update(bound, "gpu")
    assert changed == {"ConfigName": Variant("s", "gpu"), "Driver": Variant("s", "vfio-pci"),
                       "State": Variant("s", "vfio")}
    after = device.property_variants()
    assert after == {**before, **changed}
    assert list(after) == list(before)  # dbus-fast's order kept
    assert before["State"].value == "host"  # what was handed out stays as it was


def test_get_managed_objects_is_answered_from_property_values(
        private_bus: PrivateBus) -> None:
    async def scenario(server: ObjectManagerBus, client: MessageBus) -> dict[str, Any]:
        lamp = _Lamp("red")
        server.export("/org/vfiod1/lamp", lamp)
        lamp.values["Colour"] = "blue"  # the getter and property_values both say blue
        return await managed_objects(client)

    objects = served(private_bus, scenario)
    assert objects == {"/org/vfiod1/lamp": {"org.vfiod1.Lamp": {
        "Colour": Variant("s", "blue"), "Watts": Variant("u", 40)}}}
    assert list(objects["/org/vfiod1/lamp"]["org.vfiod1.Lamp"]) == ["Colour", "Watts"]


def test_get_managed_objects_with_a_plain_interface_below_is_dbus_fasts_answer(
        private_bus: PrivateBus) -> None:
    async def scenario(server: ObjectManagerBus, client: MessageBus) -> dict[str, Any]:
        server.export("/org/vfiod1/lamp", _Lamp("red"))
        server.export("/org/vfiod1/plain", _Plain())
        return await managed_objects(client)

    assert served(private_bus, scenario) == {
        "/org/vfiod1/lamp": {"org.vfiod1.Lamp": {"Colour": Variant("s", "red"),
                                                 "Watts": Variant("u", 40)}},
        "/org/vfiod1/plain": {"org.vfiod1.Plain": {"Text": Variant("s", "plain")}}}


def test_unexported_objects_leave_get_managed_objects(private_bus: PrivateBus) -> None:
    async def scenario(server: ObjectManagerBus, client: MessageBus) -> list[list[str]]:
        seen = []
        lamps = {n: _Lamp(f"colour {n}") for n in range(3)}
        for n, lamp in lamps.items():
            server.export(f"/org/vfiod1/lamp{n}", lamp)
        server.unexport("/org/vfiod1/lamp0", lamps[0])
        seen.append(list(await managed_objects(client)))
        server.unexport("/org/vfiod1/lamp1")
        server.export("/org/vfiod1/lamp0", _Lamp("back"))
        seen.append(list(await managed_objects(client)))
        return seen

    assert served(private_bus, scenario) == [["/org/vfiod1/lamp1", "/org/vfiod1/lamp2"],
                                             ["/org/vfiod1/lamp2", "/org/vfiod1/lamp0"]]


# -- the marshalled entries GetManagedObjects is answered from --------------------------

def _dbus_fast_body(bus: ObjectManagerBus, path: str) -> bytes:
    """What dbus-fast marshals for the same objects: the dict its generic handler
    answers (every object below *path*, each interface's property Variants), marshalled."""
    from vfiod.daemon.premarshalled import marshalled

    objects = {node: {name: interface.property_variants()
                      for name, interface in interfaces.items()}
               for node, interfaces in bus.exported.items()
               if path == "/" or node.startswith(path + "/")}
    return marshalled("a{oa{sa{sv}}}", [objects])


async def _offline_bus() -> ObjectManagerBus:
    return ObjectManagerBus(bus_address="unix:path=/nonexistent")  # exports need no socket


def _with_offline_bus(scenario: Callable[[ObjectManagerBus], None]) -> None:
    async def run() -> None:
        scenario(await _offline_bus())

    asyncio.run(run())


def _device(address: str) -> DeviceInterface:
    status = GPU.model_copy(update={"address": address})
    return DeviceInterface(_FakeDaemon(), status)  # type: ignore[arg-type]


def test_the_marshalled_body_is_byte_for_byte_what_dbus_fast_marshals() -> None:
    def scenario(bus: ObjectManagerBus) -> None:
        bus.export("/org/vfiod1", ManagerInterface(_FakeDaemon()))  # type: ignore[arg-type]
        for address in ("0000:06:00.0", "0000:06:00.1", "0000:00:1f.2"):
            bus.export(f"/org/vfiod1/device/pci_{address.replace(':', '_').replace('.', '_')}",
                       _device(address))
        bus.export("/org/vfiod1/lamp", _Lamp("red"))
        for path in ("/org/vfiod1", "/", "/org/vfiod1/device", "/nothing/here"):
            assert bus.managed_objects_body(path) == _dbus_fast_body(bus, path), path

    _with_offline_bus(scenario)


def test_an_unchanged_device_entry_is_reused_and_a_changed_one_marshalled_anew() -> None:
    def scenario(bus: ObjectManagerBus) -> None:
        gpu = _device("0000:06:00.0")
        bus.export("/org/vfiod1/device/pci_0000_06_00_0", gpu)
        first = bus.managed_objects_body("/org/vfiod1")
        entry = bus._entries["/org/vfiod1/device/pci_0000_06_00_0"][1]
        assert bus.managed_objects_body("/org/vfiod1") == first
        assert bus._entries["/org/vfiod1/device/pci_0000_06_00_0"][1] is entry  # reused
        gpu.update(GPU.model_copy(update={"driver": "vfio-pci", "state": State.VFIO}))
        body = bus.managed_objects_body("/org/vfiod1")
        assert body != first and body == _dbus_fast_body(bus, "/org/vfiod1")
        assert b"vfio-pci" in body

    _with_offline_bus(scenario)


def test_an_object_that_does_not_keep_its_variants_is_marshalled_at_every_call() -> None:
    def scenario(bus: ObjectManagerBus) -> None:
        lamp = _Lamp("red")
        bus.export("/org/vfiod1/lamp", lamp)
        assert b"red" in (bus.managed_objects_body("/org/vfiod1") or b"")
        lamp.values["Colour"] = "blue"  # changed in place: no cached entry may hide it
        assert b"blue" in (bus.managed_objects_body("/org/vfiod1") or b"")
        assert "/org/vfiod1/lamp" not in bus._entries

    _with_offline_bus(scenario)


def test_an_unexported_object_leaves_the_marshalled_body() -> None:
    def scenario(bus: ObjectManagerBus) -> None:
        gpu, audio = _device("0000:06:00.0"), _device("0000:06:00.1")
        bus.export("/org/vfiod1/device/pci_0000_06_00_0", gpu)
        bus.export("/org/vfiod1/device/pci_0000_06_00_1", audio)
        bus.managed_objects_body("/org/vfiod1")
        bus.unexport("/org/vfiod1/device/pci_0000_06_00_1", audio)
        assert "/org/vfiod1/device/pci_0000_06_00_1" not in bus._entries
        assert bus.managed_objects_body("/org/vfiod1") == _dbus_fast_body(bus, "/org/vfiod1")
        assert b"pci_0000_06_00_1" not in (bus.managed_objects_body("/org/vfiod1") or b"")

    _with_offline_bus(scenario)


def test_a_plain_service_interface_below_the_path_leaves_the_answer_to_dbus_fast() -> None:
    def scenario(bus: ObjectManagerBus) -> None:
        bus.export("/org/vfiod1/plain", _Plain())
        assert bus.managed_objects_body("/org/vfiod1") is None

    _with_offline_bus(scenario)


def test_dbus_fast_lists_an_interface_class_members_once_for_all_its_objects() -> None:
    from dbus_fast import service as dbus_fast_service

    members = dbus_fast_service.inspect  # replaced when vfiod.daemon.bus is imported
    first, second = _device("0000:06:00.0"), _device("0000:06:00.1")
    assert members.getmembers(DeviceInterface) is members.getmembers(DeviceInterface)
    # Each object still has its own D-Bus members, as dbus-fast made them.
    intro = [m.name for m in first.introspect().methods]
    assert intro == [m.name for m in second.introspect().methods]
    assert {"Bind", "Unbind", "Reset"} <= set(intro)
    assert members.signature is __import__("inspect").signature  # the rest is inspect's
