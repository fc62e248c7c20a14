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


def owner_changed(old: str, new: str, sender: str = "org.freedesktop.DBus") -> Message:
    """NameOwnerChanged for org.vfiod1, as the bus itself sends it (or *sender*)."""
    return Message(message_type=MessageType.SIGNAL, path="/org/freedesktop/DBus",
                   interface="org.freedesktop.DBus", member="NameOwnerChanged",
                   signature="sss", body=["org.vfiod1", old, new], sender=sender)


def monitor(json_mode: bool) -> tuple[Monitor, list[str]]:
    lines: list[str] = []
    mon = Monitor(json_mode, write=lines.append, owner=":1.5")
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
    mon.handle(owner_changed(":1.5", ""))
    assert "vfiod left the bus" in lines[-1] and not mon.needs_refresh
    mon.handle(owner_changed("", ":1.9"))
    assert "vfiod is back" in lines[-1] and mon.needs_refresh


def test_other_messages_are_ignored() -> None:
    mon, lines = monitor(json_mode=True)
    mon.handle(Message(message_type=MessageType.METHOD_RETURN, reply_serial=3, sender=":1.5"))
    mon.handle(properties_changed({"Version": Variant("s", "1")}, path="/org/vfiod1"))
    assert lines == []


def test_a_device_changed_from_another_connection_is_ignored() -> None:
    mon, lines = monitor(json_mode=False)
    spoofed = device_changed("SPOOFED", "SPOOFED")
    spoofed.sender = ":1.7"
    mon.handle(spoofed)
    assert lines == []
    assert mon.devices["0000:06:00.0"].state != "SPOOFED"


def test_vfiod_stopped_sent_by_a_client_is_ignored() -> None:
    mon, lines = monitor(json_mode=True)
    mon.handle(owner_changed(":1.5", "", sender=":1.7"))
    assert lines == [] and mon.owner == ":1.5"


def test_after_vfiod_restarts_only_its_new_name_is_believed() -> None:
    mon, lines = monitor(json_mode=False)
    mon.handle(owner_changed(":1.5", ":1.9"))
    lines.clear()
    mon.handle(device_changed("vfio", "vfio-pci"))  # from the old name :1.5
    assert lines == []
    fresh = device_changed("vfio", "vfio-pci")
    fresh.sender = ":1.9"
    mon.handle(fresh)
    assert len(lines) == 1 and "vfio-pci" in lines[0]


def test_signals_of_the_wrong_signature_print_nothing() -> None:
    mon, lines = monitor(json_mode=True)
    for member, iface, sig, body in [
            ("DeviceChanged", "org.vfiod1.Manager", "s", ["0000:06:00.0"]),
            ("DeviceChanged", "org.vfiod1.Manager", "ssss", ["a", "b", "c", "d"]),
            ("PropertiesChanged", "org.freedesktop.DBus.Properties", "s", ["x"]),
            ("InterfacesAdded", "org.freedesktop.DBus.ObjectManager", "o", ["/x"]),
            ("InterfacesRemoved", "org.freedesktop.DBus.ObjectManager", "", []),
            ("NameOwnerChanged", "org.freedesktop.DBus", "s", ["org.vfiod1"])]:
        mon.handle(signal("/org/vfiod1", iface, member, sig, body))
    assert lines == []


def test_properties_of_the_wrong_types_are_ignored() -> None:
    mon, lines = monitor(json_mode=False)
    mon.handle(properties_changed({"VendorId": Variant("s", "x"), "Healthy": Variant("u", 3),
                                   "ResetMethods": Variant("ai", [1]),
                                   "State": Variant("as", ["vfio"])}))
    dev = mon.devices["0000:06:00.0"]
    assert dev.ids == "10de:1b06" and dev.healthy is True and lines == []


def test_interfaces_added_with_odd_values_prints_no_traceback() -> None:
    mon, lines = monitor(json_mode=False)
    mon.handle(signal("/org/vfiod1", "org.freedesktop.DBus.ObjectManager", "InterfacesAdded",
                      "oa{sa{sv}}", ["/org/vfiod1/device/x",
                                     {"org.vfiod1.Device": {"Address": Variant("u", 7),
                                                            "Class": Variant("s", "x")}}]))
    assert "7" in mon.devices and mon.devices["7"].class_code == 0


def test_a_closed_pipe_marks_the_reader_gone_instead_of_raising() -> None:
    def broken(text: str) -> None:
        raise BrokenPipeError

    called: list[bool] = []
    mon = Monitor(False, write=broken, owner=":1.5")
    mon.devices = {"0000:06:00.0": gpu()}
    mon.on_reader_gone = lambda: called.append(True)
    mon.handle(device_changed("vfio", "vfio-pci"))
    mon.handle(device_changed("host", "nvidia"))
    assert mon.reader_gone and called == [True]


def job_added(operation: str, devices: list[str]) -> Message:
    return signal("/org/vfiod1", "org.freedesktop.DBus.ObjectManager", "InterfacesAdded",
                  "oa{sa{sv}}", ["/org/vfiod1/job/7", {"org.vfiod1.Job": {
                      "Operation": Variant("s", operation),
                      "Devices": Variant("as", devices), "Phase": Variant("s", "queued")}}])


def job_finished(result: str, devices: list[str], error: str) -> Message:
    return signal("/org/vfiod1", "org.vfiod1.Manager", "JobFinished", "osass",
                  ["/org/vfiod1/job/7", result, devices, error])


def test_a_job_start_and_end_are_a_line_each() -> None:
    mon, lines = monitor(json_mode=False)
    mon.handle(job_added("bind", ["0000:06:00.0", "0000:06:00.1"]))
    mon.handle(job_finished("done", ["0000:06:00.0", "0000:06:00.1"], ""))
    assert lines[0].endswith("  job 7  bind 0000:06:00.0, 0000:06:00.1  started")
    assert lines[1].endswith("  job 7  done: 0000:06:00.0, 0000:06:00.1")


def test_a_failed_job_shows_its_error_name_and_message() -> None:
    mon, lines = monitor(json_mode=False)
    mon.handle(job_finished("org.vfiod1.Error.InUse", ["0000:06:00.0"], "0000:06:00.0: "
                            "refusing to bind it to vfio-pci: it is in use"))
    assert lines[0].endswith("  job 7  org.vfiod1.Error.InUse: 0000:06:00.0: refusing to "
                             "bind it to vfio-pci: it is in use")


def test_json_mode_reports_job_started_and_job_finished() -> None:
    mon, lines = monitor(json_mode=True)
    mon.handle(job_added("reset", ["0000:06:00.0"]))
    mon.handle(job_finished("cancelled", ["0000:06:00.0"], "cancelled while queued"))
    started, finished = (json.loads(line) for line in lines)
    assert {k: started[k] for k in ("event", "job", "operation", "devices")} == \
        {"event": "JobStarted", "job": "/org/vfiod1/job/7", "operation": "reset",
         "devices": ["0000:06:00.0"]}
    assert {k: finished[k] for k in ("event", "job", "result", "devices", "error")} == \
        {"event": "JobFinished", "job": "/org/vfiod1/job/7", "result": "cancelled",
         "devices": ["0000:06:00.0"], "error": "cancelled while queued"}
