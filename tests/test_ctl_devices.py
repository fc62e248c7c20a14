"""Client-side device records built from org.vfiod1.Device properties."""

from __future__ import annotations

import pytest
from dbus_fast import Variant

from vfiod.contract import address_from_path, device_path
from vfiod.ctl.devices import PROPERTY_FIELDS, DeviceProperties, is_bridge_class, unwrap
from vfiod.model import PciDevice

DESIGN_PROPERTIES = ["Address", "VendorId", "DeviceId", "Name", "Class", "Driver",
                     "HostDriver", "State", "IommuGroup", "Holder", "HolderPid",
                     "ResetMethods", "Healthy", "BootVga"]


def gpu_properties() -> dict[str, Variant]:
    """The properties of 06:00.0 as the daemon sends them (variants)."""
    return {
        "Address": Variant("s", "0000:06:00.0"), "VendorId": Variant("q", 0x10DE),
        "DeviceId": Variant("q", 0x1B06), "Name": Variant("s", "GP102"),
        "Class": Variant("u", 0x030000), "Driver": Variant("s", "vfio-pci"),
        "HostDriver": Variant("s", "nvidia"), "State": Variant("s", "guest"),
        "IommuGroup": Variant("i", 31), "Holder": Variant("s", "qemu-system-x86 (pid 7)"),
        "HolderPid": Variant("u", 7), "ResetMethods": Variant("as", ["flr", "bus"]),
        "Healthy": Variant("b", True), "BootVga": Variant("b", False),
    }


def test_every_design_property_fills_its_field() -> None:
    dev = DeviceProperties.from_properties(unwrap(gpu_properties()))
    assert set(DESIGN_PROPERTIES) <= set(PROPERTY_FIELDS)
    assert dev == DeviceProperties(
        address="0000:06:00.0", vendor_id=0x10DE, device_id=0x1B06, name="GP102",
        class_code=0x030000, driver="vfio-pci", host_driver="nvidia", state="guest",
        iommu_group=31, holder="qemu-system-x86 (pid 7)", holder_pid=7,
        reset_methods=["flr", "bus"], healthy=True, boot_vga=False, is_bridge=False)
    assert dev.ids == "10de:1b06"


def test_unknown_properties_are_kept_aside() -> None:
    props = unwrap(gpu_properties()) | {"ConfigName": "gpu"}
    assert DeviceProperties.from_properties(props).extra == {"ConfigName": "gpu"}


def test_is_bridge_comes_from_the_daemon_when_it_says() -> None:
    props = unwrap(gpu_properties()) | {"IsBridge": True}
    assert DeviceProperties.from_properties(props).is_bridge is True


@pytest.mark.parametrize("class_code", [0x060400, 0x060401, 0x060000, 0x060100, 0x060700,
                                        0x060900, 0x030000, 0x040300, 0x010601, 0x0C0330])
def test_bridge_rule_agrees_with_the_model(class_code: int) -> None:
    dev = PciDevice(address="0000:00:03.0", vendor=0x8086, device=0x2F08,
                    subsystem_vendor=0, subsystem_device=0, class_code=class_code, name="",
                    driver=None, driver_override=None, iommu_group=None, boot_vga=False,
                    reset_methods=(), modalias="", sysfs_path="/devices/pci0000:00/x")
    assert is_bridge_class(class_code) is dev.is_bridge


def test_update_reports_only_values_that_changed() -> None:
    dev = DeviceProperties.from_properties(unwrap(gpu_properties()))
    changes = dev.update({"State": "vfio", "Driver": "vfio-pci", "Holder": ""})
    assert changes == [("state", "guest", "vfio"), ("holder", "qemu-system-x86 (pid 7)", "")]
    assert dev.update({"State": "vfio"}) == []


def test_a_status_row_fills_the_fields_it_carries() -> None:
    row = ("0000:06:00.0", "10de:1b06", "GP102", "nvidia", "host", 31, "")
    dev = DeviceProperties.from_status_row(row)
    assert (dev.address, dev.ids, dev.name, dev.driver, dev.state, dev.iommu_group) == \
        ("0000:06:00.0", "10de:1b06", "GP102", "nvidia", "host", 31)


@pytest.mark.parametrize("address", ["0000:06:00.0", "0000:ff:1f.7", "abcd:00:00.1"])
def test_object_paths_map_back_to_addresses(address: str) -> None:
    assert address_from_path(device_path(address)) == address


def test_paths_that_are_no_device_give_none() -> None:
    assert address_from_path("/org/vfiod1") is None
    assert address_from_path("/org/vfiod1/device/gpu") is None


def test_unwrap_reaches_into_nested_variants() -> None:
    value = {"a": Variant("av", [Variant("s", "x"), Variant("b", False)])}
    assert unwrap(value) == {"a": ["x", False]}


def test_strings_from_the_bus_are_made_printable_on_arrival() -> None:
    dev = DeviceProperties.from_properties({
        "Address": "0000:06:00.0", "Name": "GPU\x1b[2J", "Holder": "\x1b]0;pwned\x07 (pid 1)",
        "ResetMethods": ["flr\x9b"], "Vendor\x07": "x\x1b"})
    assert dev.name == "GPU\\x1b[2J"
    assert dev.holder == "\\x1b]0;pwned\\x07 (pid 1)"
    assert dev.reset_methods == ["flr\\x9b"]
    assert dev.extra == {"Vendor\\x07": "x\\x1b"}


def test_a_status_row_is_made_printable_on_arrival() -> None:
    dev = DeviceProperties.from_status_row(
        ("0000:06:00.0", "10de:1b06", "n\x1b", "d\x07", "s\x00", 31, "h\x7f"))
    assert (dev.name, dev.driver, dev.state, dev.holder) == ("n\\x1b", "d\\x07", "s\\x00",
                                                             "h\\x7f")
