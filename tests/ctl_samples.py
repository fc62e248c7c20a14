"""Device records shaped like the simulated seed-x99 workstation, for vfioctl's unit
tests of formatting and monitoring (no daemon needed)."""

from __future__ import annotations

from vfiod.ctl.devices import DeviceProperties


def gpu(address: str = "0000:06:00.0", driver: str = "nvidia", group: int = 31,
        **kw: object) -> DeviceProperties:
    """A GTX 1080 Ti function."""
    fields: dict[str, object] = dict(
        address=address, vendor_id=0x10DE, device_id=0x1B06,
        name="NVIDIA Corporation GP102 [GeForce GTX 1080 Ti]", class_code=0x030000,
        driver=driver, host_driver="nvidia", state="vfio" if driver == "vfio-pci" else "host",
        iommu_group=group, reset_methods=["bus"])
    fields.update(kw)
    return DeviceProperties(**fields)  # type: ignore[arg-type]


def hdmi_audio(address: str = "0000:06:00.1", driver: str = "snd_hda_intel",
               group: int = 31) -> DeviceProperties:
    """The GPU's HDMI audio function."""
    return DeviceProperties(address=address, vendor_id=0x10DE, device_id=0x10EF,
                      name="NVIDIA Corporation GP102 HDMI Audio Controller",
                      class_code=0x040300, driver=driver, host_driver="snd_hda_intel",
                      state="vfio" if driver == "vfio-pci" else "host", iommu_group=group)


def root_port() -> DeviceProperties:
    """The PCIe root port the guest's GPU sits behind."""
    return DeviceProperties(address="0000:00:03.0", vendor_id=0x8086, device_id=0x2F08,
                      name="Intel Corporation Xeon E7 v3/Xeon E5 v3/Core i7 PCI Express "
                           "Root Port 3",
                      class_code=0x060400, driver="pcieport", host_driver="pcieport",
                      state="host", iommu_group=31, is_bridge=True)


def seed_devices() -> list[DeviceProperties]:
    """A few functions of seed-x99: the boot GPU held by Xorg, the guest's GPU, a
    bridge, and a device without a group."""
    return [
        gpu("0000:05:00.0", group=30, boot_vga=True, holder="Xorg (pid 812)",
            holder_pid=812),
        hdmi_audio("0000:05:00.1", group=30),
        root_port(),
        gpu(),
        hdmi_audio(),
        DeviceProperties(address="0000:00:1f.2", vendor_id=0x8086, device_id=0x8D02,
                   name="Intel Corporation C610/X99 series chipset 6-Port SATA "
                        "Controller [AHCI mode]",
                   class_code=0x010601, driver="ahci", host_driver="ahci", state="host",
                   iommu_group=12),
        DeviceProperties(address="0000:ff:0b.0", vendor_id=0x8086, device_id=0x6F81,
                   name="Intel Corporation Xeon E7 v4/Xeon E5 v4 R3 QPI Link 0/1",
                   class_code=0x088000, driver="", state="unbound", iommu_group=-1),
    ]
