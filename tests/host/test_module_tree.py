"""What Unbind would bind, read from the kernel's module tree as modprobe reads it."""

from __future__ import annotations

from pathlib import Path

from vfiod.host.real import RealHost

RELEASE = "6.1.0-test-amd64"
GPU_ALIAS = "pci:v000010DEd00001B06sv00001458sd00003702bc03sc00i00"


def _machine(tmp_path: Path, loaded_drivers: dict[str, str] | None = None) -> RealHost:
    """A root with /proc's release and /lib/modules/RELEASE (read only, never written)."""
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text(RELEASE + "\n")
    moddir = tmp_path / "lib/modules" / RELEASE
    moddir.mkdir(parents=True)
    (moddir / "modules.alias").write_text(
        "# Aliases extracted from modules themselves.\n"
        "alias pci:v000010DEd*sv*sd*bc03sc*i* nvidia\n"
        "alias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci\n"
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
        "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n"
        "alias pci:v00001AF4d00001050sv*sd*bc*sc*i* virtio_gpu\n"
        "alias usb:v*p*d*dc*dsc*dp*ic*isc*ip*in* usbcore\n")
    (moddir / "modules.dep").write_text(
        "kernel/drivers/video/nvidia.ko.xz:\n"
        "kernel/drivers/usb/host/xhci-pci.ko: kernel/drivers/usb/host/xhci-hcd.ko\n"
        "kernel/drivers/usb/host/xhci-hcd.ko:\n")
    (moddir / "modules.builtin").write_text("kernel/drivers/pci/pcieport.ko\n")
    for module, driver in (loaded_drivers or {}).items():
        d = tmp_path / "sys/module" / module / "drivers"
        d.mkdir(parents=True)
        (d / f"pci:{driver}").mkdir()
    return RealHost(tmp_path)


def test_the_one_module_claiming_a_modalias_is_the_kernel_s_choice(tmp_path: Path) -> None:
    assert _machine(tmp_path).kernel_choice(GPU_ALIAS) == "nvidia"


def test_a_loaded_module_s_choice_is_named_by_the_driver_it_registered(tmp_path: Path) -> None:
    host = _machine(tmp_path, {"xhci_pci": "xhci_hcd"})
    assert host.kernel_choice("pci:v00001B21d00001242sv00001B21sd00001242bc0Csc03i30") \
        == "xhci_hcd"


def test_no_choice_is_claimed_when_two_modules_match_or_none(tmp_path: Path) -> None:
    host = _machine(tmp_path)
    assert host.kernel_choice("pci:v00001AF4d00001050sv00001AF4sd00001100bc03sc00i00") is None
    assert host.kernel_choice("pci:v00008086d00008D7Csv00001458sd00005001bc08sc80i00") is None


def test_a_driver_is_loadable_when_loaded_or_its_module_exists(tmp_path: Path) -> None:
    host = _machine(tmp_path)
    (tmp_path / "sys/bus/pci/drivers/e1000e").mkdir(parents=True)
    assert host.driver_loadable("nvidia")
    assert host.driver_loadable("e1000e")
    assert host.driver_loadable("pcieport")
    assert not host.driver_loadable("nouveau")


def test_without_a_module_tree_nothing_is_known(tmp_path: Path) -> None:
    host = RealHost(tmp_path)
    assert host.kernel_choice(GPU_ALIAS) is None
    assert not host.driver_loadable("nvidia")
