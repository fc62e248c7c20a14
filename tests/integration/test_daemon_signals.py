"""What clients see change: DeviceChanged, PropertiesChanged, the ObjectManager, guests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from dbus_fast import MessageType

from vfiod.sim.holder import spawn_holder

from .helpers import (DEVICE_IFACE, MANAGER, SignalRecorder, Vfiod, call, client, device_path,
                      sim_driver, wait_for)

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"
ASMEDIA_USB = "0000:11:00.0"
ONBOARD_AUDIO = "0000:00:1b.0"


def test_direct_write_to_the_sim_tree_shows_in_status_properties_and_device_changed(
        vfiod: Vfiod) -> None:
    async def scenario() -> None:
        async with client(vfiod.address) as bus:
            signals = await SignalRecorder(bus).start()
            # Behind the daemon's back, as `echo ... > unbind` would.
            (vfiod.sim_root / "sys/bus/pci/drivers/snd_hda_intel/unbind").write_text(AUDIO)
            await signals.wait(lambda: (AUDIO, "unbound", "") in signals.device_changed())
            await signals.wait(lambda: {"Driver": "", "State": "unbound"}.items()
                               <= {k: v for p in signals.properties_changed(AUDIO)
                                   for k, v in p.items()}.items())

    asyncio.run(scenario())
    assert vfiod.status()[AUDIO]["state"] == "unbound"
    assert vfiod.get_property(AUDIO, "Driver") == ""


def test_properties_changed_carries_only_the_values_that_changed(vfiod: Vfiod) -> None:
    async def scenario() -> list[dict[str, object]]:
        async with client(vfiod.address) as bus:
            signals = await SignalRecorder(bus).start()
            reply = await call(bus, "Bind", "sa{sv}", [GPU, {}])
            assert reply.message_type is MessageType.METHOD_RETURN, reply.body
            await signals.wait(lambda: any(p.get("State") == "vfio"
                                           for p in signals.properties_changed(GPU)))
            return signals.properties_changed(GPU)

    changes = asyncio.run(scenario())
    assert any(p.get("Driver") == "vfio-pci" for p in changes)
    for changed in changes:
        assert changed, "an empty PropertiesChanged"
        assert not {"Address", "VendorId", "DeviceId", "Class", "Name"} & set(changed)


def test_bind_shows_the_group_busy_while_it_runs(vfiod: Vfiod) -> None:
    async def scenario() -> list[tuple[str, str, str]]:
        async with client(vfiod.address) as bus:
            signals = await SignalRecorder(bus).start()
            await call(bus, "Bind", "sa{sv}", [GPU, {}])
            await signals.wait(lambda: (AUDIO, "vfio", "vfio-pci") in signals.device_changed())
            return signals.device_changed()

    changes = asyncio.run(scenario())
    for address, host_driver in ((GPU, "nvidia"), (AUDIO, "snd_hda_intel")):
        mine = [c for c in changes if c[0] == address]
        assert mine[0] == (address, "busy", host_driver), mine
        assert mine[-1] == (address, "vfio", "vfio-pci"), mine


def test_object_manager_lists_every_pci_function(vfiod: Vfiod) -> None:
    async def managed() -> dict[str, dict[str, dict[str, object]]]:
        async with client(vfiod.address) as bus:
            reply = await call(bus, "GetManagedObjects", path=MANAGER,
                               interface="org.freedesktop.DBus.ObjectManager")
            return reply.body[0]

    objects = asyncio.run(managed())
    functions = os.listdir(vfiod.sim_root / "sys/bus/pci/devices")
    assert set(objects) == {device_path(a) for a in functions}
    for address in functions:
        props = objects[device_path(address)][DEVICE_IFACE]
        assert props["Address"].value == address
        assert props["Driver"].value == sim_driver(vfiod.sim_root, address)


def test_removed_function_disappears_and_a_rescan_brings_it_back(vfiod: Vfiod) -> None:
    path = device_path(ASMEDIA_USB)

    async def scenario() -> None:
        async with client(vfiod.address) as bus:
            signals = await SignalRecorder(bus).start()

            def om_signal(member: str) -> bool:
                return any(m.member == member and m.path == MANAGER and m.body[0] == path
                           for m in signals.messages)

            (vfiod.sim_root / f"sys/bus/pci/devices/{ASMEDIA_USB}/remove").write_text("1")
            await signals.wait(lambda: om_signal("InterfacesRemoved"))
            assert ASMEDIA_USB not in vfiod.status()
            (vfiod.sim_root / "sys/bus/pci/rescan").write_text("1")
            await signals.wait(lambda: om_signal("InterfacesAdded"))

    asyncio.run(scenario())
    assert vfiod.status()[ASMEDIA_USB]["driver"] == "xhci_hcd"


def test_hot_added_function_configured_for_vfio_is_claimed(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config=f'[[device]]\nmatch = "{ASMEDIA_USB}"\nboot = "vfio"\n').start()
    assert sim_driver(daemon.sim_root, ASMEDIA_USB) == "xhci_hcd"  # not claimed at start
    (daemon.sim_root / f"sys/bus/pci/devices/{ASMEDIA_USB}/remove").write_text("1")
    wait_for(lambda: ASMEDIA_USB not in daemon.status(), what="the removal")
    (daemon.sim_root / "sys/bus/pci/rescan").write_text("1")
    wait_for(lambda: sim_driver(daemon.sim_root, ASMEDIA_USB) == "vfio-pci", what="the claim")
    wait_for(lambda: daemon.status().get(ASMEDIA_USB, {}).get("state") == "vfio",
             what="Status to show it on vfio-pci")


def test_guest_holding_the_group_shows_as_guest_with_its_pid(vfiod: Vfiod) -> None:
    assert vfiod.call("Bind", "sa{sv}", ONBOARD_AUDIO, "0").returncode == 0
    with spawn_holder(vfiod.sim_root, ["/dev/vfio/9"], comm="qemu-system-x86") as guest:
        wait_for(lambda: vfiod.status()[ONBOARD_AUDIO]["state"] == "guest", what="guest state")
        assert vfiod.status()[ONBOARD_AUDIO]["holder"] == f"qemu-system-x86 (pid {guest.pid})"
        assert vfiod.get_property(ONBOARD_AUDIO, "HolderPid") == guest.pid
    wait_for(lambda: vfiod.status()[ONBOARD_AUDIO]["state"] == "vfio", what="the guest gone")


def test_guest_letting_go_returns_a_device_with_on_release_host_to_its_driver(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(
        config=f'[[device]]\nmatch = "{ONBOARD_AUDIO}"\non_release = "host"\n').start()
    assert daemon.call("Bind", "sa{sv}", ONBOARD_AUDIO, "0").returncode == 0
    with spawn_holder(daemon.sim_root, ["/dev/vfio/9"]):
        wait_for(lambda: daemon.status()[ONBOARD_AUDIO]["state"] == "guest", what="the guest")
    wait_for(lambda: sim_driver(daemon.sim_root, ONBOARD_AUDIO) == "snd_hda_intel",
             what="on_release = host")
    wait_for(lambda: daemon.status()[ONBOARD_AUDIO]["state"] == "host", what="Status")


def test_guest_letting_go_resets_a_device_with_on_release_reset(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(
        config=f'[[device]]\nmatch = "{ONBOARD_AUDIO}"\non_release = "reset"\n').start()
    assert daemon.call("Bind", "sa{sv}", ONBOARD_AUDIO, "0").returncode == 0
    with spawn_holder(daemon.sim_root, ["/dev/vfio/9"]):
        wait_for(lambda: daemon.status()[ONBOARD_AUDIO]["state"] == "guest", what="the guest")
    wait_for(lambda: f"reset {ONBOARD_AUDIO}: done" in daemon.log(), what="the reset")
    assert "flr" in daemon.log().split(f"reset {ONBOARD_AUDIO}: done", 1)[1].splitlines()[0]
    assert sim_driver(daemon.sim_root, ONBOARD_AUDIO) == "vfio-pci"  # reset, not moved
