"""The applet's menu model and icon choice, from device records alone."""

from __future__ import annotations

from vfiod.applet.model import (NOT_RUNNING, Look, MenuEntry, build_menu, choose_look,
                                shown_devices, tooltip)
from vfiod.ctl.devices import DeviceProperties


def device(address: str, state: str = "host", driver: str = "nvidia", *, name: str = "",
           holder: str = "", healthy: bool = True, **extra: object) -> DeviceProperties:
    dev = DeviceProperties(address, name="GP102 [GeForce GTX 1080 Ti]", state=state,
                           driver=driver, holder=holder, healthy=healthy)
    if name:
        dev.extra["ConfigName"] = name
    dev.extra.update(extra)
    return dev


def by_address(*devices: DeviceProperties) -> dict[str, DeviceProperties]:
    return {d.address: d for d in devices}


def find(entries: list[MenuEntry] | tuple[MenuEntry, ...], key: str) -> MenuEntry:
    for entry in entries:
        if entry.key == key:
            return entry
        try:
            return find(entry.children, key)
        except KeyError:
            pass
    raise KeyError(key)


def test_shows_configured_devices_and_guests_but_not_other_host_devices() -> None:
    devices = by_address(device("0000:06:00.0", name="gpu"),
                         device("0000:00:1b.0", "guest", "vfio-pci",
                                holder="qemu-system-x86 (pid 7)"),
                         device("0000:00:19.0", driver="e1000e"))
    assert [d.address for d in shown_devices(devices)] == ["0000:00:1b.0", "0000:06:00.0"]


def test_the_desktops_gpu_held_by_xorg_is_not_shown_unless_configured() -> None:
    devices = by_address(device("0000:05:00.0", holder="Xorg (pid 1776)"))
    assert shown_devices(devices) == []


def test_a_device_in_error_is_shown_even_unconfigured() -> None:
    devices = by_address(device("0000:09:00.0", "error", "vfio-pci"))
    assert [d.address for d in shown_devices(devices)] == ["0000:09:00.0"]


def test_menu_titles_a_device_by_its_config_name_and_state() -> None:
    menu = build_menu(by_address(device("0000:06:00.0", name="gpu")), running=True)
    assert [e.label for e in menu] == ["gpu (06:00.0): on the host (nvidia)"]


def test_a_device_on_the_host_offers_bind_and_reset_not_unbind() -> None:
    menu = build_menu(by_address(device("0000:06:00.0", name="gpu")), running=True)
    assert find(menu, "0000:06:00.0/Bind").enabled
    assert find(menu, "0000:06:00.0/Bind").action == ("Bind", "0000:06:00.0")
    assert not find(menu, "0000:06:00.0/Unbind").enabled
    assert find(menu, "0000:06:00.0/Reset").enabled


def test_a_free_vfio_device_offers_unbind_not_bind() -> None:
    menu = build_menu(by_address(device("0000:06:00.0", "vfio", "vfio-pci", name="gpu")),
                      running=True)
    assert find(menu, "0000:06:00.0/Unbind").enabled
    assert not find(menu, "0000:06:00.0/Bind").enabled


def test_a_device_in_a_guest_offers_nothing_and_names_its_holder() -> None:
    menu = build_menu(by_address(device("0000:06:00.0", "guest", "vfio-pci", name="gpu",
                                        holder="qemu-system-x86 (pid 42)")), running=True)
    assert find(menu, "0000:06:00.0/holder").label == "Holder: qemu-system-x86 (pid 42)"
    assert not any(find(menu, f"0000:06:00.0/{op}").enabled
                   for op in ("Bind", "Unbind", "Reset"))


def test_a_device_with_an_operation_running_offers_nothing_until_it_ends() -> None:
    devices = by_address(device("0000:06:00.0", name="gpu"))
    menu = build_menu(devices, running=True, pending={"0000:06:00.0"})
    assert not find(menu, "0000:06:00.0/Bind").enabled
    assert find(menu, "0000:06:00.0/pending").label == "An operation is running…"


def test_health_line_says_what_to_do_for_a_quarantined_device() -> None:
    dev = device("0000:06:00.0", "error", "vfio-pci", name="gpu")
    dev.quarantined = True
    menu = build_menu(by_address(dev), running=True)
    assert "quarantined" in find(menu, "0000:06:00.0/health").label
    assert "reset it" in find(menu, "0000:06:00.0/health").label


def test_menu_says_vfiod_not_running_while_it_is_gone() -> None:
    menu = build_menu(by_address(device("0000:06:00.0", name="gpu")), running=False)
    assert [(e.label, e.enabled) for e in menu] == [(NOT_RUNNING, False)]


def test_menu_says_so_when_there_is_nothing_to_show() -> None:
    menu = build_menu(by_address(device("0000:00:19.0", driver="e1000e")), running=True)
    assert [e.label for e in menu] == ["No configured devices and no guests"]


def test_look_is_host_when_every_shown_device_is_on_the_host() -> None:
    assert choose_look(by_address(device("0000:06:00.0", name="gpu")), True) is Look.HOST


def test_look_is_guests_when_a_device_is_on_vfio_pci() -> None:
    devices = by_address(device("0000:06:00.0", "vfio", "vfio-pci", name="gpu"),
                         device("0000:09:00.0", name="gpu2"))
    assert choose_look(devices, True) is Look.GUESTS


def test_look_is_guests_when_a_device_is_in_a_guest() -> None:
    devices = by_address(device("0000:00:1b.0", "guest", "vfio-pci", holder="qemu (pid 1)"))
    assert choose_look(devices, True) is Look.GUESTS


def test_look_is_error_when_a_shown_device_is_unhealthy() -> None:
    devices = by_address(device("0000:06:00.0", "vfio", "vfio-pci", name="gpu",
                                healthy=False))
    assert choose_look(devices, True) is Look.ERROR


def test_error_outranks_guests() -> None:
    devices = by_address(device("0000:06:00.0", "guest", "vfio-pci", name="gpu"),
                         device("0000:09:00.0", "error", "vfio-pci", name="gpu2"))
    assert choose_look(devices, True) is Look.ERROR


def test_look_is_error_while_vfiod_is_not_running() -> None:
    assert choose_look(by_address(device("0000:06:00.0", name="gpu")), False) is Look.ERROR


def test_an_unconfigured_host_device_does_not_change_the_look() -> None:
    devices = by_address(device("0000:06:00.0", name="gpu"),
                         device("0000:00:11.0", "unbound", ""))
    assert choose_look(devices, True) is Look.HOST


def test_tooltip_lists_the_shown_devices_under_a_title_for_the_look() -> None:
    title, body = tooltip(by_address(device("0000:06:00.0", "vfio", "vfio-pci", name="gpu")),
                          True)
    assert title == "vfiod: devices given to guests"
    assert body == "gpu (06:00.0): on vfio-pci, free"
