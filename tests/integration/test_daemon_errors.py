"""Every error of DESIGN.md, each from a real case, with its D-Bus name and a useful message."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant

from vfiod.sim.holder import spawn_holder

from .helpers import SignalRecorder, Vfiod, call, client, knobs, options, sim_driver

GPU, AUDIO = "0000:06:00.0", "0000:06:00.1"


def manager_call(daemon: Vfiod, member: str, device: str, **opts: bool) -> Message:
    """One Manager call through dbus-fast; the reply (an ERROR or a METHOD_RETURN)."""
    async def go() -> Message:
        async with client(daemon.address) as bus:
            return await call(bus, member, "sa{sv}", [device, options(**opts)])

    return asyncio.run(go())


def error_of(reply: Message) -> tuple[str, str]:
    """(error name, message) of an error reply."""
    assert reply.message_type is MessageType.ERROR, f"expected an error, got {reply.body}"
    return reply.error_name or "", reply.body[0] if reply.body else ""


def assert_one_line_without_traceback(message: str) -> None:
    assert "\n" not in message
    assert "Traceback" not in message and 'File "' not in message


def test_path_like_device_argument_is_invalid_argument(vfiod: Vfiod) -> None:
    name, message = error_of(manager_call(vfiod, "Bind", "../../x"))
    assert name == "org.vfiod1.Error.InvalidArgument"
    assert "'../../x' is not a device" in message
    assert_one_line_without_traceback(message)


def test_unknown_option_is_invalid_argument(vfiod: Vfiod) -> None:
    name, message = error_of(manager_call(vfiod, "Unbind", GPU, force=True))
    assert name == "org.vfiod1.Error.InvalidArgument"
    assert "unknown option 'force'" in message and "group (b)" in message


def test_option_of_the_wrong_type_is_invalid_argument(vfiod: Vfiod) -> None:
    async def go() -> Message:
        async with client(vfiod.address) as bus:
            from dbus_fast import Variant
            return await call(bus, "Bind", "sa{sv}", [GPU, {"group": Variant("s", "no")}])

    name, message = error_of(asyncio.run(go()))
    assert name == "org.vfiod1.Error.InvalidArgument"
    assert "'group' must be a boolean" in message
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_absent_address_is_no_such_device(vfiod: Vfiod) -> None:
    name, message = error_of(manager_call(vfiod, "Bind", "0000:77:00.0"))
    assert name == "org.vfiod1.Error.NoSuchDevice"
    assert "0000:77:00.0" in message


def test_root_disk_controller_is_in_use_even_when_forced(vfiod: Vfiod) -> None:
    name, message = error_of(manager_call(vfiod, "Bind", "00:1f.2", force=True))
    assert name == "org.vfiod1.Error.InUse"
    assert "sda2" in message or "mounted" in message, message
    assert sim_driver(vfiod.sim_root, "0000:00:1f.2") == "ahci"


def test_desktop_gpu_is_in_use_by_xorg_named_with_its_pid(vfiod: Vfiod) -> None:
    name, message = error_of(manager_call(vfiod, "Bind", "0000:05:00.0"))
    assert name == "org.vfiod1.Error.InUse"
    found = re.search(r"Xorg \(pid (\d+)\)", message)
    assert found, message
    assert Path(f"/proc/{found.group(1)}/comm").read_text().strip() == "Xorg"
    assert sim_driver(vfiod.sim_root, "0000:05:00.0") == "nvidia"


def test_one_function_of_a_shared_group_is_group_not_viable(vfiod: Vfiod) -> None:
    name, message = error_of(manager_call(vfiod, "Bind", GPU, group=False))
    assert name == "org.vfiod1.Error.GroupNotViable"
    assert AUDIO in message
    assert sim_driver(vfiod.sim_root, GPU) == "nvidia"


def test_bind_with_the_iommu_off_is_group_not_viable(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(profile="seed-x99-noiommu").start()
    name, message = error_of(manager_call(daemon, "Bind", GPU))
    assert name == "org.vfiod1.Error.GroupNotViable"
    assert "IOMMU" in message
    assert daemon.busctl("get-property", "org.vfiod1", "/org/vfiod1", "org.vfiod1.Manager",
                         "IommuEnabled").stdout.strip() == "b false"


def test_write_that_outlives_its_timeout_leaves_the_group_busy_then_finishes_by_itself(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(write_timeout=0.5, delay=[
        {"path": "/sys/bus/pci/drivers_probe", "seconds": 2.0, "times": 1}])).start()

    async def scenario() -> tuple[str, str, dict[str, Any], list[str]]:
        async with client(daemon.address) as bus:
            signals = await SignalRecorder(bus).start()
            reply = await call(bus, "Bind", "sa{sv}", [GPU, options()])
            name, message = error_of(reply)
            # The daemon answers while the write is in the kernel: the group is busy, why.
            row = await asyncio.to_thread(lambda: daemon.status()[GPU])
            reason = await asyncio.to_thread(daemon.get_property, GPU, "Error")
            await signals.wait(lambda: all(
                signals.states(a)[-1:] == ["vfio"] for a in (GPU, AUDIO)), timeout=10.0)
            return name, message, {**row, "reason": reason}, signals.states(GPU)

    name, message, busy, states = asyncio.run(scenario())
    assert name == "org.vfiod1.Error.Timeout"
    assert "did not return within 0.5 s" in message and "finishes the bind by itself" in message
    assert_one_line_without_traceback(message)
    assert busy["state"] == "busy"
    assert "drivers_probe" in busy["reason"] and "blocked in the kernel since" in busy["reason"]
    assert states[-1] == "vfio"
    assert sim_driver(daemon.sim_root, GPU) == "vfio-pci"
    assert sim_driver(daemon.sim_root, AUDIO) == "vfio-pci"


def test_unbind_while_a_guest_holds_a_device_fd_is_in_use_naming_the_guest(vfiod: Vfiod) -> None:
    assert vfiod.call("Bind", "sa{sv}", GPU, "0").returncode == 0
    # Only the device fd, not the group node: the kernel would block unbind until it exits.
    with spawn_holder(vfiod.sim_root, [], device_fds=[GPU]) as guest:
        name, message = error_of(manager_call(vfiod, "Unbind", GPU))
        assert name == "org.vfiod1.Error.InUse"
        assert f"qemu-system-x86 (pid {guest.pid})" in message
    assert sim_driver(vfiod.sim_root, GPU) == "vfio-pci"


def test_gpu_whose_only_reset_is_a_shared_bus_reset_is_reset_failed(vfiod: Vfiod) -> None:
    # The GPU and its audio are on their host drivers: VFIO's hot reset cannot help.
    name, message = error_of(manager_call(vfiod, "Reset", GPU))
    assert name == "org.vfiod1.Error.ResetFailed"
    assert "bus" in message and "ENOTTY" in message
    assert "0000:06:00.1" in message and "snd_hda_intel" in message


def test_reset_that_leaves_the_device_dead_is_reset_failed(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(reset_outcome=[["0000:00:1b.0", "flr", "dies"],
                                               ["0000:00:1b.0", "pm", "dies"]])).start()
    name, message = error_of(manager_call(daemon, "Reset", "0000:00:1b.0"))
    assert name == "org.vfiod1.Error.ResetFailed"
    assert "all ones" in message
    assert daemon.get_property("0000:00:1b.0", "State") == "error"
    assert daemon.get_property("0000:00:1b.0", "Healthy") is False


def test_kernel_refusing_drivers_probe_is_failed_and_rolled_back(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod(**knobs(fail=[{"path": "/sys/bus/pci/drivers_probe",
                                       "errno": "EIO"}])).start()
    name, message = error_of(manager_call(daemon, "Bind", GPU))
    assert name == "org.vfiod1.Error.Failed"
    assert "drivers_probe" in message and "put back" in message
    assert sim_driver(daemon.sim_root, GPU) == "nvidia"
    assert sim_driver(daemon.sim_root, AUDIO) == "snd_hda_intel"


def test_calls_with_the_wrong_signature_are_refused_by_name(vfiod: Vfiod) -> None:
    async def go() -> Any:
        async with client(vfiod.address) as bus:
            return await call(bus, "Bind", "ss", [GPU, "group"])

    reply = asyncio.run(go())
    assert reply.message_type is MessageType.ERROR
    assert reply.error_name == "org.freedesktop.DBus.Error.UnknownMethod"


def raw_call(daemon: Vfiod, path: str, interface: str, member: str, signature: str,
             body: list[Any]) -> Message:
    """One call of anything on vfiod; the reply."""
    async def go() -> Message:
        async with client(daemon.address) as bus:
            return await call(bus, member, signature, body, path=path, interface=interface)

    return asyncio.run(go())


PROPERTIES = "org.freedesktop.DBus.Properties"
DEVICE_PATH = "/org/vfiod1/device/pci_0000_06_00_0"
HUGE = "x" * 100_000


def test_get_managed_objects_with_arguments_is_invalid_args(vfiod: Vfiod) -> None:
    reply = raw_call(vfiod, "/org/vfiod1", "org.freedesktop.DBus.ObjectManager",
                     "GetManagedObjects", "s", ["surprise"])
    name, message = error_of(reply)
    assert name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert message == 'GetManagedObjects takes no arguments, not "s"'


def test_get_managed_objects_without_arguments_still_answers(vfiod: Vfiod) -> None:
    reply = raw_call(vfiod, "/org/vfiod1", "org.freedesktop.DBus.ObjectManager",
                     "GetManagedObjects", "", [])
    assert reply.message_type is MessageType.METHOD_RETURN
    assert DEVICE_PATH in reply.body[0]


def test_a_100_kb_interface_name_is_not_echoed_back(vfiod: Vfiod) -> None:
    reply = raw_call(vfiod, DEVICE_PATH, PROPERTIES, "GetAll", "s", [HUGE])
    name, message = error_of(reply)
    assert name == "org.freedesktop.DBus.Error.UnknownInterface"
    assert len(message) < 300 and "(100000 characters)" in message


def test_a_100_kb_property_name_is_not_echoed_back(vfiod: Vfiod) -> None:
    reply = raw_call(vfiod, DEVICE_PATH, PROPERTIES, "Get", "ss", ["org.vfiod1.Device", HUGE])
    name, message = error_of(reply)
    assert name == "org.freedesktop.DBus.Error.UnknownProperty"
    assert len(message) < 300 and message.startswith('interface "org.vfiod1.Device" does not')


def test_a_100_kb_property_name_on_a_standard_interface_is_not_echoed_back(
        vfiod: Vfiod) -> None:
    reply = raw_call(vfiod, DEVICE_PATH, PROPERTIES, "Set", "ssv",
                     ["org.freedesktop.DBus.Peer", HUGE + "\x1b", Variant("s", "")])
    name, message = error_of(reply)
    assert name == "org.freedesktop.DBus.Error.UnknownProperty"
    assert len(message) < 300 and "\x1b" not in message


def test_a_short_unknown_property_keeps_dbus_fasts_own_answer(vfiod: Vfiod) -> None:
    reply = raw_call(vfiod, DEVICE_PATH, PROPERTIES, "Get", "ss", ["org.vfiod1.Device", "Nope"])
    assert error_of(reply) == ("org.freedesktop.DBus.Error.UnknownProperty",
                               'interface "org.vfiod1.Device" does not have property "Nope"')


def test_a_100_kb_object_path_is_not_echoed_back(vfiod: Vfiod) -> None:
    reply = raw_call(vfiod, "/" + HUGE, PROPERTIES, "GetAll", "s", ["org.vfiod1.Device"])
    name, message = error_of(reply)
    assert name == "org.freedesktop.DBus.Error.UnknownObject"
    assert len(message) < 300
