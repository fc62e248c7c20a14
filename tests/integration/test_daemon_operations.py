"""Bind, Unbind and Reset through the running daemon, as scripts call them with busctl."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from dbus_fast import MessageType

from .helpers import DEVICE_IFACE, Vfiod, call, client, device_path, knobs, options, sim_driver

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"


def test_busctl_bind_puts_both_functions_of_the_gpu_on_vfio_pci(vfiod: Vfiod) -> None:
    result = vfiod.call("Bind", "sa{sv}", GPU, "0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"] == [[GPU, AUDIO]]
    status = vfiod.status()
    for address in (GPU, AUDIO):
        assert (status[address]["driver"], status[address]["state"]) == ("vfio-pci", "vfio")
        assert sim_driver(vfiod.sim_root, address) == "vfio-pci"


def test_busctl_unbind_returns_the_gpu_to_nvidia_and_its_audio_to_snd_hda_intel(
        vfiod: Vfiod) -> None:
    assert vfiod.call("Bind", "sa{sv}", "06:00.0", "0").returncode == 0
    result = vfiod.call("Unbind", "sa{sv}", GPU, "0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"] == [[GPU, AUDIO]]
    status = vfiod.status()
    assert (status[GPU]["driver"], status[GPU]["state"]) == ("nvidia", "host")
    assert (status[AUDIO]["driver"], status[AUDIO]["state"]) == ("snd_hda_intel", "host")
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"
    assert sim_driver(vfiod.sim_root, AUDIO) == "snd_hda_intel"


def test_bind_of_a_group_already_on_vfio_pci_moves_nothing(vfiod: Vfiod) -> None:
    assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
    result = vfiod.call("Bind", "sa{sv}", AUDIO, "0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"] == [[]]


def test_device_object_bind_and_unbind_move_its_group(vfiod: Vfiod) -> None:
    async def scenario() -> None:
        async with client(vfiod.address) as bus:
            reply = await call(bus, "Bind", "a{sv}", [{}], path=device_path(AUDIO),
                               interface=DEVICE_IFACE)
            assert reply.body == [[GPU, AUDIO]], reply.body
            reply = await call(bus, "Unbind", "a{sv}", [options(group=True)],
                               path=device_path(AUDIO), interface=DEVICE_IFACE)
            assert reply.body == [[GPU, AUDIO]], reply.body

    asyncio.run(scenario())
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_reset_of_the_onboard_audio_returns_the_method_that_worked(vfiod: Vfiod) -> None:
    result = vfiod.call("Reset", "sa{sv}", "00:1b.0", "0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"] == ["flr"]


def test_bind_by_config_name_uses_the_config_file(make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(config='[[device]]\nmatch = "0000:06:00.0"\nname = "gpu"\n').start()
    result = daemon.call("Bind", "sa{sv}", "gpu", "0")
    assert result.returncode == 0, result.stderr
    assert sim_driver(daemon.sim_root, GPU) == "vfio-pci"


def test_groups_of_different_gpus_bind_in_parallel(vfiod: Vfiod) -> None:
    async def scenario() -> list[list[str]]:
        async with client(vfiod.address) as bus:
            replies = await asyncio.gather(
                call(bus, "Bind", "sa{sv}", ["0000:06:00.0", {}]),
                call(bus, "Bind", "sa{sv}", ["0000:09:00.0", {}]))
            return [r.body[0] for r in replies]

    assert asyncio.run(scenario()) == [[GPU, AUDIO], ["0000:09:00.0", "0000:09:00.1"]]
    assert {sim_driver(vfiod.sim_root, a) for a in
            (GPU, AUDIO, "0000:09:00.0", "0000:09:00.1")} == {"vfio-pci"}


def test_two_binds_of_one_group_at_once_are_serialised(vfiod: Vfiod) -> None:
    async def scenario() -> list[list[str]]:
        async with client(vfiod.address) as bus:
            replies = await asyncio.gather(
                call(bus, "Bind", "sa{sv}", [GPU, {}]),
                call(bus, "Bind", "sa{sv}", [AUDIO, {}]))
            return sorted((r.body[0] for r in replies), key=len)

    # One moves the group; the other, run after it, finds nothing left to move.
    assert asyncio.run(scenario()) == [[], [GPU, AUDIO]]


def test_status_keeps_answering_while_a_bind_waits_on_the_kernel(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(delay=[{"path": "/sys/bus/pci/drivers_probe",
                                        "seconds": 3, "times": 1}])).start()

    async def scenario() -> tuple[list[float], list[str]]:
        async with client(daemon.address) as bus:
            bind = asyncio.ensure_future(call(bus, "Bind", "sa{sv}", [GPU, {}]))
            took, states = [], []
            while not bind.done():
                began = time.monotonic()
                reply = await call(bus, "Status")
                took.append(time.monotonic() - began)
                states += [row[4] for row in reply.body[0] if row[0] == GPU]
                await asyncio.sleep(0.2)
            assert (await bind).message_type is MessageType.METHOD_RETURN
            return took, states

    took, states = asyncio.run(scenario())
    assert len(took) >= 5 and max(took) < 1.0, took
    assert "busy" in states
