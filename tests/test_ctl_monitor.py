"""``vfioctl monitor``: signals become one line (text) or one object (JSON) each."""

from __future__ import annotations

import json
from typing import Any

from ctl_samples import gpu
from dbus_fast import Message, MessageType, Variant

from vfiod.ctl.monitor import Monitor

GPU_PATH = "/org/vfiod1/device/pci_0000_06_00_0"


def signal(path: str, interface: str, member: str, signature: str, body: list[Any]) -> Message:
    """A signal as the bus delivers it."""
    return Message(message_type=MessageType.SIGNAL, path=path, interface=interface,
                   member=member, signature=signature, body=body, sender=":1.5")


def device_changed(state: str, driver: str) -> Message:
    return signal("/org/vfiod1", "org.vfiod1.Manager", "DeviceChanged", "sss",
                  ["0000:06:00.0", state, driver])


def properties_changed(changed: dict[str, Variant], path: str = GPU_PATH) -> Message:
    return signal(path, "org.freedesktop.DBus.Properties", "PropertiesChanged", "sa{sv}as",
                  ["org.vfiod1.Device", changed, []])


def monitor(json_mode: bool) -> tuple[Monitor, list[str]]:
    lines: list[str] = []
    mon = Monitor(json_mode, write=lines.append)
    mon.devices = {"0000:06:00.0": gpu()}
    return mon, lines


def test_a_bind_is_one_text_line_even_when_both_signals_report_it() -> None:
    mon, lines = monitor(json_mode=False)
    mon.handle(device_changed("vfio", "vfio-pci"))
    mon.handle(properties_changed({"Driver": Variant("s", "vfio-pci"),
                                   "State": Variant("s", "vfio")}))
    assert len(lines) == 1
    assert lines[0].endswith("0000:06:00.0  NVIDIA Corporation GP102 [GeForce GTX 1080 Ti]"
                             "  driver nvidia -> vfio-pci, state host -> vfio")


def test_a_property_the_device_changed_signal_lacks_gets_its_own_line() -> None:
    mon, lines = monitor(json_mode=False)
    mon.handle(properties_changed({"Holder": Variant("s", "qemu-system-x86 (pid 9)"),
                                   "HolderPid": Variant("u", 9)}))
    assert lines[0].endswith("holder - -> qemu-system-x86 (pid 9), holder pid - -> 9")


def test_json_mode_prints_one_object_per_signal() -> None:
    mon, lines = monitor(json_mode=True)
    mon.handle(device_changed("busy", "nvidia"))
    mon.handle(properties_changed({"State": Variant("s", "busy")}))
    first, second = (json.loads(line) for line in lines)
    assert {k: first[k] for k in ("event", "address", "state", "driver")} == \
        {"event": "DeviceChanged", "address": "0000:06:00.0", "state": "busy",
         "driver": "nvidia"}
    assert second["event"] == "PropertiesChanged"
    assert second["changed"] == {"state": "busy"} and second["invalidated"] == []
    assert "T" in first["time"]


def test_hotplug_is_reported_as_added_and_removed() -> None:
    mon, lines = monitor(json_mode=True)
    props = {"Address": Variant("s", "0000:11:00.0"), "Driver": Variant("s", "xhci_hcd"),
             "State": Variant("s", "host")}
    mon.handle(signal("/org/vfiod1", "org.freedesktop.DBus.ObjectManager", "InterfacesAdded",
                      "oa{sa{sv}}", ["/org/vfiod1/device/pci_0000_11_00_0",
                                     {"org.vfiod1.Device": props}]))
    mon.handle(signal("/org/vfiod1", "org.freedesktop.DBus.ObjectManager",
                      "InterfacesRemoved", "oas",
                      ["/org/vfiod1/device/pci_0000_11_00_0", ["org.vfiod1.Device"]]))
    added, removed = (json.loads(line) for line in lines)
    assert added["event"] == "DeviceAdded" and added["device"]["driver"] == "xhci_hcd"
    assert removed == {"time": removed["time"], "event": "DeviceRemoved",
                       "address": "0000:11:00.0"}
    assert "0000:11:00.0" not in mon.devices


def test_vfiod_leaving_and_coming_back_is_reported() -> None:
    mon, lines = monitor(json_mode=False)
    owner = "org.freedesktop.DBus"
    mon.handle(signal("/org/freedesktop/DBus", owner, "NameOwnerChanged", "sss",
                      ["org.vfiod1", ":1.5", ""]))
    assert "vfiod left the bus" in lines[-1] and not mon.needs_refresh
    mon.handle(signal("/org/freedesktop/DBus", owner, "NameOwnerChanged", "sss",
                      ["org.vfiod1", "", ":1.9"]))
    assert "vfiod is back" in lines[-1] and mon.needs_refresh


def test_other_messages_are_ignored() -> None:
    mon, lines = monitor(json_mode=True)
    mon.handle(Message(message_type=MessageType.METHOD_RETURN, reply_serial=3, sender=":1.5"))
    mon.handle(properties_changed({"Version": Variant("s", "1")}, path="/org/vfiod1"))
    assert lines == []
