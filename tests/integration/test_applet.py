"""vfiod-applet against the real vfiod on the simulated seed-x99, with a stand-in tray
host and notification daemon on a private session bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from vfiod.sim.holder import spawn_holder

from .applet_helpers import (TrayHost, applet, find_item, labels, session_bus, until,
                             until_async)
from .helpers import Vfiod, client, sim_driver

GPU, GPU_AUDIO = "0000:06:00.0", "0000:06:00.1"
CONFIG = """
[[device]]
match = "0000:06:00.0"
name = "gpu"

[[device]]
match = "0000:11:00.0"
name = "usb"
"""


@dataclass
class Desk:
    """The applet's world: vfiod, the tray host, and the applet's process."""

    vfiod: Vfiod
    tray: TrayHost
    tray_address: str

    async def menu_labels(self) -> list[str]:
        return labels(await self.tray.layout())

    async def menu_shows(self, text: str, timeout: float = 10.0) -> list[str]:
        async def shown() -> list[str] | None:
            found = await self.menu_labels()
            return found if any(text in label for label in found) else None
        return await until_async(shown, timeout, f"{text!r} in the menu")


@asynccontextmanager
async def desk(vfiod: Vfiod, tmp_path: Path, applet_config: str = "") -> AsyncIterator[Desk]:
    """The applet running, registered, and showing vfiod's devices."""
    config = tmp_path / "applet.toml"
    config.write_text(applet_config)
    with session_bus() as address:
        bus = await MessageBus(bus_address=address).connect()
        try:
            tray = await TrayHost(bus).start()
            with applet(vfiod.address, address, config) as proc:
                await until(lambda: tray.watcher.registered, 15, "the applet to register")
                here = Desk(vfiod, tray, address)
                await here.menu_shows("gpu (06:00.0)")
                yield here
                if proc.poll() is not None:
                    assert proc.stdout is not None
                    raise AssertionError(f"the applet died: {proc.stdout.read()}")
        finally:
            bus.disconnect()


def with_config(make_vfiod: Callable[..., Vfiod]) -> Vfiod:
    return make_vfiod(config=CONFIG).start()


def test_menu_lists_each_configured_device_by_its_config_name(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    async def scenario() -> None:
        async with desk(with_config(make_vfiod), tmp_path) as here:
            found = await here.menu_labels()
            assert "gpu (06:00.0): on the host (nvidia)" in found
            assert "usb (11:00.0): on the host (xhci_hcd)" in found
            assert not any(label.startswith("GP102") for label in found)  # unconfigured
            assert await here.tray.icon_name() == "computer"
    asyncio.run(scenario())


def test_clicking_bind_binds_the_guest_gpu_and_menu_and_icon_follow_by_signal(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    async def scenario() -> None:
        async with desk(with_config(make_vfiod), tmp_path) as here:
            layouts, icons = here.tray.seen("LayoutUpdated"), here.tray.seen("NewIcon")
            props = here.tray.seen("ItemsPropertiesUpdated")
            bind = find_item(await here.tray.layout(), ["gpu (06:00.0)", "Bind"])
            await here.tray.click(bind)
            # The whole IOMMU group goes: the GPU and its HDMI audio.
            await until(lambda: all(sim_driver(here.vfiod.sim_root, a) == "vfio-pci"
                                    for a in (GPU, GPU_AUDIO)), 15, "the group on vfio-pci")
            await until(lambda: here.tray.seen("NewIcon") > icons, 5, "NewIcon")
            assert await here.tray.icon_name() == "video-display"
            await until(lambda: here.tray.seen("LayoutUpdated") > layouts
                        or here.tray.seen("ItemsPropertiesUpdated") > props, 5,
                        "a menu update signal")
            assert "gpu (06:00.0): on vfio-pci, free" in await here.menu_shows("free")
            await until(lambda: ("Bind 0000:06:00.0: done", "")
                        in here.tray.notifications.shown, 5, "the 'done' notification")
    asyncio.run(scenario())


def test_daemon_restart_shows_not_running_then_recovers_within_a_second(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = with_config(make_vfiod)
        async with desk(daemon, tmp_path) as here, client(daemon.address) as watcher:
            owner_seen: list[float] = []

            def on_message(msg: Message) -> None:
                if (msg.message_type is MessageType.SIGNAL
                        and msg.member == "NameOwnerChanged" and msg.body[2]):
                    owner_seen.append(time.monotonic())
            await watcher.call(Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                body=["type='signal',member='NameOwnerChanged',arg0='org.vfiod1'"]))
            watcher.add_message_handler(on_message)

            await asyncio.get_running_loop().run_in_executor(None, daemon.stop)
            assert await here.menu_shows("vfiod not running") == ["vfiod not running"]
            assert await here.tray.icon_name() == "dialog-error"
            layouts = here.tray.seen("LayoutUpdated")
            await asyncio.get_running_loop().run_in_executor(None, daemon.start)
            await until(lambda: here.tray.seen("LayoutUpdated") > layouts, 30,
                        "the menu to come back")
            recovered = time.monotonic()
            assert owner_seen, "vfiod's return was not seen"
            assert recovered - owner_seen[-1] < 1.0
            assert "gpu (06:00.0): on the host (nvidia)" in await here.menu_labels()
            assert await here.tray.icon_name() == "computer"
    asyncio.run(scenario())


def test_the_applet_registers_again_when_the_tray_host_restarts(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    async def scenario() -> None:
        async with desk(with_config(make_vfiod), tmp_path) as here:
            first = list(here.tray.watcher.registered)
            await here.tray.bus.release_name("org.kde.StatusNotifierWatcher")
            await here.tray.bus.request_name("org.kde.StatusNotifierWatcher")
            await until(lambda: len(here.tray.watcher.registered) > len(first), 5,
                        "a second registration")
            assert here.tray.watcher.registered == first * 2
    asyncio.run(scenario())


def test_notifications_when_a_guest_takes_the_gpu_and_when_it_comes_back(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = with_config(make_vfiod)
        assert daemon.call("Bind", "sa{sv}", GPU, "0").returncode == 0
        async with desk(daemon, tmp_path) as here:
            shown = here.tray.notifications.shown
            with spawn_holder(daemon.sim_root, ["/dev/vfio/31"]) as guest:
                took = await until(lambda: [s for s in shown if "is in a guest" in s[0]],
                                   10, "the 'in a guest' notification")
                assert took[0] == ("gpu (0000:06:00.0) is in a guest",
                                   f"Held by qemu-system-x86 (pid {guest.pid}).")
                assert await here.tray.icon_name() == "video-display"
            back = await until(lambda: [s for s in shown if "came back" in s[0]], 10,
                               "the 'came back' notification")
            assert back[0][0] == "gpu (0000:06:00.0) came back"
    asyncio.run(scenario())


def test_a_notification_kind_turned_off_in_the_config_is_not_sent(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = with_config(make_vfiod)
        assert daemon.call("Bind", "sa{sv}", GPU, "0").returncode == 0
        async with desk(daemon, tmp_path, "[notifications]\nguest_took = false\n") as here:
            shown = here.tray.notifications.shown
            with spawn_holder(daemon.sim_root, ["/dev/vfio/31"]):
                await here.menu_shows("in a guest")
            await until(lambda: [s for s in shown if "came back" in s[0]], 10,
                        "the 'came back' notification")
            assert not [s for s in shown if "is in a guest" in s[0]]
    asyncio.run(scenario())


def test_a_forced_bind_of_the_desktop_gpu_notifies_who_holds_it_and_shows_it_releasing(
        make_vfiod: Callable[..., Vfiod], tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = make_vfiod(config=CONFIG + "\n[handover]\ntimeout = 3\n").start()
        xorg = daemon.status()["0000:05:00.0"]["holder"]
        async with desk(daemon, tmp_path) as here:
            shown = here.tray.notifications.shown
            bind = asyncio.create_task(asyncio.to_thread(
                daemon.call, "Bind", "sa{sv}", "05:00.0", "1", "force", "b", "true"))
            await here.menu_shows("(05:00.0): being released by the desktop")
            notice = await until(lambda: [s for s in shown if "handed to vfio-pci" in s[0]],
                                 10, "the 'being handed over' notification")
            assert notice[0][0] == ("NVIDIA Corporation GP102 [GeForce GTX 1080 Ti] "
                                    "(0000:05:00.0) is being handed to vfio-pci")
            assert f"Held by {xorg}: they have 3 s to close it" in notice[0][1]
            refused = await bind
            assert refused.returncode != 0 and "still held by" in refused.stderr
            labels_after = await here.menu_labels()
            assert not any("05:00.0" in label for label in labels_after)
    asyncio.run(scenario())
