"""The guest's device layout and the QEMU options made from it."""

from __future__ import annotations

from . import layout


def device_args(opts: list[str]) -> list[str]:
    return [opts[i + 1] for i, o in enumerate(opts) if o == "-device"]


def test_guest_addresses_are_the_ones_the_readme_documents() -> None:
    assert (layout.VGA, layout.HDA) == ("0000:01:00.0", "0000:01:00.1")
    assert layout.NIC == "0000:02:00.0"
    assert layout.XHCI == "0000:03:00.0"
    assert layout.VIRTIO_GPU == "0000:04:00.0"
    assert layout.AHCI == "0000:05:00.0"
    assert (layout.HOSTROOT_9P, layout.RESULTS_9P) == ("0000:00:10.0", "0000:00:11.0")


def test_roles_are_unique() -> None:
    roles = [f.role for port in layout.PORTS for f in port.functions]
    assert len(roles) == len(set(roles))


def test_secondary_buses_follow_the_slot_order() -> None:
    ordered = sorted(layout.PORTS, key=lambda p: p.slot)
    assert [p.bus for p in ordered] == list(range(1, len(ordered) + 1))


def test_exactly_one_root_port_lacks_x_speed_5() -> None:
    ports = [d for d in device_args(layout.device_options()) if d.startswith("pcie-root-port")]
    assert len(ports) == len(layout.PORTS)
    assert len([p for p in ports if "x-speed=5" not in p]) == 1


def test_gpu_like_slot_is_multifunction_vga_plus_hda_with_a_codec() -> None:
    devices = device_args(layout.device_options())
    assert "VGA,id=vga,bus=rp1,addr=00.0,multifunction=on" in devices
    assert "intel-hda,id=hda,bus=rp1,addr=00.1" in devices
    assert "hda-duplex,bus=hda.0,audiodev=snd0" in devices


def test_nic_network_cannot_leave_the_guest() -> None:
    opts = layout.device_options()
    assert opts[opts.index("-netdev") + 1] == "user,id=n0,restrict=on"


def test_the_ahci_gets_a_raw_disk_when_an_image_is_given(tmp_path) -> None:
    image = layout.make_disk(tmp_path / "ahci-disk.img")
    assert image.stat().st_size == layout.AHCI_DISK_BYTES
    assert image.stat().st_blocks == 0  # sparse
    opts = layout.device_options(image)
    assert opts[opts.index("-drive") + 1] == f"if=none,id=ahcidisk,format=raw,file={image}"
    assert f"ide-hd,bus=ahci.0,drive=ahcidisk,serial={layout.AHCI_DISK_SERIAL}" \
        in device_args(opts)
    assert "-drive" not in layout.device_options()
