"""What clients see change: DeviceChanged, PropertiesChanged, the ObjectManager, guests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from dbus_fast import MessageType

from vfiod.sim.holder import spawn_holder

from .helpers import (DEVICE_IFACE, MANAGER, SignalRecorder, Vfiod, call, client, device_path,
                      sim_driver)

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
    path = device_path(ASMEDIA_USB)

    async def scenario() -> None:
        async with client(daemon.address) as bus:
            signals = await SignalRecorder(bus).start()
            (daemon.sim_root / f"sys/bus/pci/devices/{ASMEDIA_USB}/remove").write_text("1")
            await signals.wait(lambda: any(
                m.member == "InterfacesRemoved" and m.body[0] == path for m in signals.messages))
            (daemon.sim_root / "sys/bus/pci/rescan").write_text("1")
            await signals.wait(lambda: (ASMEDIA_USB, "vfio", "vfio-pci")
                               in signals.device_changed())

    asyncio.run(scenario())
    assert sim_driver(daemon.sim_root, ASMEDIA_USB) == "vfio-pci"
    assert daemon.status()[ASMEDIA_USB]["state"] == "vfio"


async def _guest_comes_and_goes(daemon: Vfiod, address: str, group_node: str,
                                until: Callable[[list[str]], bool],
                                while_held: Callable[[int], None] = lambda pid: None
                                ) -> list[str]:
    """Start a guest holding *group_node*, wait for DeviceChanged to say ``guest``, run
    *while_held* (with the guest's pid), end the guest, and wait until the states
    announced after the guest satisfy *until*; those states."""
    async with client(daemon.address) as bus:
        signals = await SignalRecorder(bus).start()
        with spawn_holder(daemon.sim_root, [group_node], comm="qemu-system-x86") as guest:
            await signals.wait(lambda: "guest" in signals.states(address))
            while_held(guest.pid)
        after = len(signals.states(address))
        await signals.wait(lambda: until(signals.states(address)[after:]))
        return signals.states(address)[after:]


def test_guest_holding_the_group_shows_as_guest_with_its_pid(vfiod: Vfiod) -> None:
    assert vfiod.call("Bind", "sa{sv}", ONBOARD_AUDIO, "0").returncode == 0

    def held(pid: int) -> None:
        assert vfiod.status()[ONBOARD_AUDIO]["holder"] == f"qemu-system-x86 (pid {pid})"
        assert vfiod.get_property(ONBOARD_AUDIO, "HolderPid") == pid

    after = asyncio.run(_guest_comes_and_goes(vfiod, ONBOARD_AUDIO, "/dev/vfio/9",
                                              lambda states: "vfio" in states, held))
    assert after[-1] == "vfio"
    assert vfiod.status()[ONBOARD_AUDIO]["holder"] == ""


def test_guest_letting_go_returns_a_device_with_on_release_host_to_its_driver(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(
        config=f'[[device]]\nmatch = "{ONBOARD_AUDIO}"\non_release = "host"\n').start()
    assert daemon.call("Bind", "sa{sv}", ONBOARD_AUDIO, "0").returncode == 0
    after = asyncio.run(_guest_comes_and_goes(daemon, ONBOARD_AUDIO, "/dev/vfio/9",
                                              lambda states: "host" in states))
    assert after[-1] == "host" and "busy" in after
    assert sim_driver(daemon.sim_root, ONBOARD_AUDIO) == "snd_hda_intel"
    assert daemon.status()[ONBOARD_AUDIO]["state"] == "host"


def test_guest_letting_go_resets_a_device_with_on_release_reset(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(
        config=f'[[device]]\nmatch = "{ONBOARD_AUDIO}"\non_release = "reset"\n').start()
    assert daemon.call("Bind", "sa{sv}", ONBOARD_AUDIO, "0").returncode == 0
    # The reset shows as busy, then back on vfio-pci (reset, not moved), healthy.
    after = asyncio.run(_guest_comes_and_goes(
        daemon, ONBOARD_AUDIO, "/dev/vfio/9", lambda states: states[-2:] == ["busy", "vfio"]))
    assert after[-2:] == ["busy", "vfio"]
    assert sim_driver(daemon.sim_root, ONBOARD_AUDIO) == "vfio-pci"
    assert daemon.get_property(ONBOARD_AUDIO, "Healthy") is True
