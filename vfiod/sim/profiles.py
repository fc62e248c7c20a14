"""The simulated machines: the X99 workstation of the write-up (and a variant with buses
that several functions or groups share), a scale machine, and the QEMU guest of the
real-kernel tier (which checks the simulation against a real kernel).

Every vendor/device id here is in the real pci.ids; module aliases follow the real
modules' alias patterns (class-based for ahci, xhci_pci, snd_hda_intel's HDMI entries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from vfiod.sim.spec import (
    Children,
    Desktop,
    DeviceSpec,
    Disk,
    ModuleSpec,
    NetIface,
    Profile,
    UsbInput,
)

MODULES: tuple[ModuleSpec, ...] = (
    ModuleSpec("pcieport", "pcieport", ("pci:v*d*sv*sd*bc06sc04i00",), builtin=True),
    ModuleSpec("lpc_ich", "lpc_ich", ("pci:v00008086d00008D47sv*sd*bc*sc*i*",), size=28672),
    ModuleSpec("i2c_smbus", size=20480),
    ModuleSpec("i2c_i801", "i801_smbus", ("pci:v00008086d00008D22sv*sd*bc*sc*i*",),
               depends=("i2c_smbus",), size=36864),
    ModuleSpec("libahci", size=49152),
    ModuleSpec("ahci", "ahci", ("pci:v*d*sv*sd*bc01sc06i01",), depends=("libahci",),
               size=49152),
    ModuleSpec("xhci_hcd", size=315392),
    ModuleSpec("xhci_pci", "xhci_hcd", ("pci:v*d*sv*sd*bc0Csc03i30",),
               depends=("xhci_hcd",), size=24576),
    ModuleSpec("e1000e", "e1000e", ("pci:v00008086d000015A1sv*sd*bc*sc*i*",), size=323584),
    ModuleSpec("snd_hda_codec", size=184320),
    ModuleSpec("snd_hda_intel", "snd_hda_intel",
               ("pci:v000010DEd*sv*sd*bc04sc03i00", "pci:v00008086d00008D20sv*sd*bc*sc*i*"),
               depends=("snd_hda_codec",), size=57344),
    ModuleSpec("nvidia", "nvidia",
               ("pci:v000010DEd*sv*sd*bc03sc00i00", "pci:v000010DEd*sv*sd*bc03sc02i00"),
               size=56217600, dev_nodes=("/dev/nvidiactl",)),
    ModuleSpec("mlx5_core", "mlx5_core",
               ("pci:v000015B3d00001017sv*sd*bc*sc*i*", "pci:v000015B3d00001018sv*sd*bc*sc*i*"),
               size=2031616),
    ModuleSpec("vfio", size=45056, dev_nodes=("/dev/vfio/vfio",)),
    ModuleSpec("vfio_iommu_type1", depends=("vfio",), size=45056),
    ModuleSpec("irqbypass", size=16384),
    ModuleSpec("vfio_pci_core", depends=("vfio", "irqbypass"), size=81920),
    # vfio-pci's id table is "override only": it matches a device through its
    # driver_override or a new_id, never through a pci: modalias.
    ModuleSpec("vfio_pci", "vfio-pci", ("vfio_pci:v*d*sv*sd*bc*sc*i*",),
               depends=("vfio_pci_core", "vfio_iommu_type1"), size=16384),
)

#: The drivers of seed-x99-shared-bus's add-in cards, on top of MODULES.
SHARED_BUS_MODULES: tuple[ModuleSpec, ...] = (
    ModuleSpec("r8169", "r8169", ("pci:v000010ECd00008169sv*sd*bc*sc*i*",), size=110592),
    ModuleSpec("firewire_core", size=86016),
    ModuleSpec("firewire_ohci", "firewire_ohci", ("pci:v*d*sv*sd*bc0Csc00i10*",),
               depends=("firewire_core",), size=49152),
    ModuleSpec("igb", "igb", ("pci:v00008086d000010C9sv*sd*bc*sc*i*",), size=290816),
)

_BOARD = (0x1043, 0x8600)  # ASUSTeK: the X99 board's subsystem id for its chipset functions
_NVIDIA_REF = (0x10DE, 0x120F)


def _dev(address: str, ids: str, class_code: int, revision: int, parent: str | None,
         group: int | None, driver: str | None = None, subsystem: tuple[int, int] = _BOARD,
         **kw: Any) -> DeviceSpec:
    vendor, device = (int(x, 16) for x in ids.split(":"))
    return DeviceSpec(address=address, vendor=vendor, device=device,
                      subsystem_vendor=subsystem[0], subsystem_device=subsystem[1],
                      class_code=class_code, revision=revision, parent=parent, group=group,
                      host_driver=driver, **kw)


def _gpu(slot: str, parent: str, group: int | None, index: int, boot_vga: bool) -> list[DeviceSpec]:
    """A GTX 1080 Ti and its HDMI audio function, as two functions of one slot."""
    vga = _dev(f"{slot}.0", "10de:1b06", 0x030000, 0xA1, parent, group, "nvidia",
               _NVIDIA_REF, boot_vga=boot_vga,
               # NVIDIA GPUs set No_Soft_Reset (no pm reset) and have no FLR: only a bus
               # reset, which fails while the audio function shares the bus.
               reset_methods=("bus",),
               children=Children(drm_card=index, drm_render=128 + index, nvidia_minor=index,
                                 gpu_model="NVIDIA GeForce GTX 1080 Ti"))
    audio = _dev(f"{slot}.1", "10de:10ef", 0x040300, 0xA1, parent, group, "snd_hda_intel",
                 _NVIDIA_REF,
                 children=Children(sound_card=index + 1, pcm=("D3p", "D7p", "D8p", "D9p")))
    return [vga, audio]


def _shared_buses(g: Callable[[int], int | None]) -> list[DeviceSpec]:
    """Add-in cards whose functions share a bus: the cases a per-function reset misses.

    Behind root port 00:1c.0, an ASM1083 PCIe-to-PCI bridge (no driver: pcieport takes
    only PCIe ports) with a conventional PCI bus carrying a VT6306 FireWire card and an
    RTL8169 NIC. The bridge aliases their requester ids, so the three share IOMMU group
    41. The kernel probes reset methods as each function is added: the first one alone
    on the bus lists ``bus`` (which then fails, the second sharing the bus), the second
    lists nothing and has no ``reset`` file (like the HDMI audio of a GPU): only VFIO's
    hot reset reaches the NIC. Behind root port 00:1c.2, an 82576 dual-port NIC whose
    ports have ACS, so one bus holds two IOMMU groups (42 and 43); modelled without its
    FLR, so a port resets only with the whole bus, the same way.
    """
    rp = 0x060400
    return [
        _dev("0000:00:1c.0", "8086:8d10", rp, 0xD5, None, g(10), "pcieport", (0x8086, 0)),
        _dev("0000:00:1c.2", "8086:8d14", rp, 0xD5, None, g(15), "pcieport", (0x8086, 0)),
        # Subtractive decode (prog-if 01): no driver matches it, like on real machines.
        _dev("0000:0c:00.0", "1b21:1080", 0x060401, 0x04, "0000:00:1c.0", g(41), None,
             (0x1849, 0x1080)),
        _dev("0000:0d:00.0", "1106:3044", 0x0C0010, 0xC0, "0000:0c:00.0", g(41),
             "firewire_ohci", (0x1043, 0x81FE), reset_methods=("bus",)),
        _dev("0000:0d:01.0", "10ec:8169", 0x020000, 0x10, "0000:0c:00.0", g(41), "r8169",
             (0x10EC, 0x8169),
             children=Children(net=NetIface("enp13s1", "00:e0:4c:68:00:01", 3, up=False))),
        _dev("0000:0e:00.0", "8086:10c9", 0x020000, 0x01, "0000:00:1c.2", g(42), "igb",
             (0x8086, 0xA03C), reset_methods=("bus",),
             children=Children(net=NetIface("enp14s0f0", "00:1b:21:4a:00:10", 4, up=False))),
        _dev("0000:0e:00.1", "8086:10c9", 0x020000, 0x01, "0000:00:1c.2", g(43), "igb",
             (0x8086, 0xA03C),
             children=Children(net=NetIface("enp14s0f1", "00:1b:21:4a:00:11", 5, up=False))),
    ]


def _seed_x99(iommu: bool, shared_buses: bool = False) -> Profile:
    def g(n: int) -> int | None:
        return n if iommu else None

    rp = 0x060400
    devices = [
        _dev("0000:00:00.0", "8086:2f00", 0x060000, 0x02, None, g(0), subsystem=(0x8086, 0)),
        _dev("0000:00:02.0", "8086:2f04", rp, 0x02, None, g(1), "pcieport", (0x8086, 0)),
        _dev("0000:00:03.0", "8086:2f08", rp, 0x02, None, g(2), "pcieport", (0x8086, 0)),
        _dev("0000:00:11.0", "8086:8d7c", 0xFF0000, 0x05, None, g(5)),
        _dev("0000:00:11.4", "8086:8d62", 0x010601, 0x05, None, g(5), "ahci",
             reset_methods=("pm",),
             children=Children(disks=(Disk("sdb", 16, 1, port=7, scsi_host=6),))),
        _dev("0000:00:14.0", "8086:8d31", 0x0C0330, 0x05, None, g(6), "xhci_hcd",
             reset_methods=("pm",),
             children=Children(usb_buses=(1, 2), inputs=(
                 UsbInput(1, "1-2", 0x046D, 0xC31C, "Logitech USB Keyboard", 1, 3, 3),))),
        _dev("0000:00:19.0", "8086:15a1", 0x020000, 0x05, None, g(8), "e1000e",
             (0x1043, 0x85C4), reset_methods=("af_flr", "pm"),
             children=Children(net=NetIface("eno1", "2c:56:dc:3e:91:0a", 2, "192.168.1.1"))),
        _dev("0000:00:1b.0", "8086:8d20", 0x040300, 0x05, None, g(9), "snd_hda_intel",
             (0x1043, 0x8641), reset_methods=("flr", "pm"),
             children=Children(sound_card=0, pcm=("D0p", "D0c"))),
        _dev("0000:00:1c.4", "8086:8d18", rp, 0xD5, None, g(11), "pcieport", (0x8086, 0)),
        _dev("0000:00:1f.0", "8086:8d47", 0x060100, 0x05, None, g(12), "lpc_ich"),
        _dev("0000:00:1f.2", "8086:8d02", 0x010601, 0x05, None, g(12), "ahci",
             reset_methods=("pm",),
             children=Children(disks=(Disk("sda", 0, 3, port=1, scsi_host=0),))),
        _dev("0000:00:1f.3", "8086:8d22", 0x0C0500, 0x05, None, g(12), "i801_smbus"),
        # A PLX PEX 8747 switch behind root port 2 carries the first two GPUs...
        _dev("0000:03:00.0", "10b5:8747", rp, 0xCA, "0000:00:02.0", g(20), "pcieport",
             (0x10B5, 0x8747)),
        _dev("0000:04:08.0", "10b5:8747", rp, 0xCA, "0000:03:00.0", g(21), "pcieport",
             (0x10B5, 0x8747)),
        _dev("0000:04:10.0", "10b5:8747", rp, 0xCA, "0000:03:00.0", g(22), "pcieport",
             (0x10B5, 0x8747)),
        *_gpu("0000:05:00", "0000:04:08.0", g(30), 0, boot_vga=True),
        *_gpu("0000:06:00", "0000:04:10.0", g(31), 1, boot_vga=False),
        # ...and a second one behind root port 3 the third.
        _dev("0000:07:00.0", "10b5:8747", rp, 0xCA, "0000:00:03.0", g(23), "pcieport",
             (0x10B5, 0x8747)),
        _dev("0000:08:08.0", "10b5:8747", rp, 0xCA, "0000:07:00.0", g(24), "pcieport",
             (0x10B5, 0x8747)),
        *_gpu("0000:09:00", "0000:08:08.0", g(32), 2, boot_vga=False),
        _dev("0000:11:00.0", "1b21:1242", 0x0C0330, 0x00, "0000:00:1c.4", g(40), "xhci_hcd",
             (0x1043, 0x8675), reset_methods=("pm", "bus"),
             children=Children(usb_buses=(3, 4))),
    ]
    name = "seed-x99"
    description = "X99 workstation: three GTX 1080 Ti, the host's desktop on 05:00.0"
    modules, boot_modules = MODULES, ("lpc_ich", "i2c_i801", "ahci", "xhci_pci", "e1000e",
                                      "snd_hda_intel", "nvidia")
    if not iommu:
        name, description = "seed-x99-noiommu", description + "; IOMMU off"
    if shared_buses:
        devices += _shared_buses(g)
        name = "seed-x99-shared-bus"
        description += ("; plus a NIC and a FireWire card on a PCI bus behind a PCIe-to-PCI "
                        "bridge, and a dual-port NIC whose ports share a bus but not a group")
        modules = MODULES + SHARED_BUS_MODULES
        boot_modules += ("r8169", "firewire_ohci", "igb")
    iommu_args = "intel_iommu=on " if iommu else ""
    return Profile(
        name=name,
        description=description,
        iommu=iommu,
        devices=tuple(sorted(devices, key=lambda d: d.address)),
        modules=modules,
        boot_modules=boot_modules,
        cmdline=("BOOT_IMAGE=/boot/vmlinuz-6.1.0-sim-amd64 "
                 "root=UUID=0b2c3f4e-5a6d-4c1e-9f0a-7d8e9c1b2a3f ro "
                 f"{iommu_args}quiet"),
        mounts=(
            "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
            "udev /dev devtmpfs rw,nosuid,relatime,size=16303092k,nr_inodes=4075773,"
            "mode=755,inode64 0 0",
            "tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=3265428k,mode=755,"
            "inode64 0 0",
            "/dev/sda2 / ext4 rw,relatime,errors=remount-ro 0 0",
            "/dev/sda1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077,codepage=437,"
            "iocharset=ascii,shortname=mixed,utf8,errors=remount-ro 0 0",
        ),
        swaps=("/dev/sda3",),
        desktop=Desktop("Xorg", "0000:05:00.0",
                        ("/dev/dri/card0", "/dev/nvidia0", "/dev/nvidiactl")),
    )


#: Drivers and modules of the dying-cards machine, on top of MODULES.
DYING_CARDS_MODULES: tuple[ModuleSpec, ...] = (
    ModuleSpec("amdgpu", "amdgpu", ("pci:v00001002d000067DFsv*sd*bc03sc00i00",),
               size=9834496),
    ModuleSpec("nvme_core", size=176128),
    ModuleSpec("nvme", "nvme", ("pci:v*d*sv*sd*bc01sc08i02",), depends=("nvme_core",),
               size=57344),
    # gnif/vendor-reset, out of tree: not loaded at boot (what doctor warns about).
    ModuleSpec("vendor_reset", size=126976),
)

#: Reset times seen on the real kernel (shared/notes/kernel-facts.md: pm 52 ms, bus and
#: flr 130-150 ms); device_specific, remove and rescan are estimates, not measurements.
_TIMES = (("flr", 0.130), ("pm", 0.052), ("bus", 0.150), ("hot_reset", 0.150),
          ("device_specific", 0.5), ("remove", 0.07), ("rescan", 0.1))


def _dying_cards() -> Profile:
    """Cards that die like real ones, each behind a root port of its own.

    01:00.0/.1 an AMD RX 580 (Polaris 10) and its HDMI audio with the AMD reset bug;
    02:00.0/.1 a GTX 1070 without FLR whose bus is shared with its audio (only VFIO's
    hot reset of both works); 03:00.0 an NVMe SSD whose FLR the kernel waits its whole
    60 s for and then gives up (ENOTTY), while pm works; 04:00.0 a USB controller that
    never comes back after a guest used it.
    """
    rp = 0x060400
    port = dict(pcie=True, aer=True)
    t = _TIMES
    devices = [
        _dev("0000:00:00.0", "8086:2f00", 0x060000, 0x02, None, 0, subsystem=(0x8086, 0)),
        _dev("0000:00:01.0", "8086:2f02", rp, 0x02, None, 1, "pcieport", (0x8086, 0), **port),
        _dev("0000:00:02.0", "8086:2f04", rp, 0x02, None, 2, "pcieport", (0x8086, 0), **port),
        _dev("0000:00:03.0", "8086:2f08", rp, 0x02, None, 3, "pcieport", (0x8086, 0), **port),
        _dev("0000:00:1c.0", "8086:8d10", rp, 0xD5, None, 4, "pcieport", (0x8086, 0),
             **port),
        _dev("0000:01:00.0", "1002:67df", 0x030000, 0xE7, "0000:00:01.0", 10, "amdgpu",
             (0x1DA2, 0xE366), reset_methods=("flr", "bus"), reset_seconds=t,
             reset_bug="amd", bars=((0xE0000000, 0x10000000), (0xF7A00000, 0x40000)),
             **port),
        _dev("0000:01:00.1", "1002:aaf0", 0x040300, 0x00, "0000:00:01.0", 10,
             "snd_hda_intel", (0x1DA2, 0xAAF0), reset_seconds=t,
             bars=((0xF7A60000, 0x4000),), **port),
        _dev("0000:02:00.0", "10de:1b81", 0x030000, 0xA1, "0000:00:02.0", 11, "nvidia",
             (0x10DE, 0x119D), reset_methods=("bus",), reset_seconds=t,
             bars=((0xF6000000, 0x1000000),), **port),
        _dev("0000:02:00.1", "10de:10f0", 0x040300, 0xA1, "0000:00:02.0", 11,
             "snd_hda_intel", (0x10DE, 0x119D), reset_seconds=t,
             bars=((0xF7080000, 0x4000),), **port),
        _dev("0000:03:00.0", "144d:a808", 0x010802, 0x00, "0000:00:03.0", 12, "nvme",
             (0x144D, 0xA801), reset_methods=("flr", "pm", "bus"),
             reset_seconds=(("flr", 60.0),) + t, reset_outcomes=(("flr", "enotty"),),
             bars=((0xF7900000, 0x4000),), **port),
        _dev("0000:04:00.0", "1912:0015", 0x0C0330, 0x02, "0000:00:1c.0", 13, "xhci_hcd",
             (0x1043, 0x8488), reset_methods=("pm", "bus"), reset_seconds=t,
             reset_bug="never_back", bars=((0xF7800000, 0x2000),), **port),
    ]
    return Profile(
        name="dying-cards",
        description="cards that die like real ones: an AMD RX 580 with the reset bug, a "
                    "GTX 1070 without FLR, an NVMe SSD whose FLR takes 60 s, a USB "
                    "controller that never comes back",
        iommu=True,
        devices=tuple(sorted(devices, key=lambda d: d.address)),
        modules=tuple(
            # snd_hda_intel's table has the AMD HDMI audio too (its 1002:aaf0 entry).
            replace(m, aliases=m.aliases + ("pci:v00001002d0000AAF0sv*sd*bc*sc*i*",))
            if m.name == "snd_hda_intel" else m for m in MODULES) + DYING_CARDS_MODULES,
        boot_modules=("amdgpu", "nvidia", "snd_hda_intel", "nvme", "xhci_pci"),
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-sim-amd64 ro intel_iommu=on",
        mounts=("sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
                "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0"),
    )


#: The scale machine: this many ConnectX-5 PFs, each with VFS_PER_PF virtual functions.
SCALE_PFS = 64
SCALE_VFS_PER_PF = 63


def _scale() -> Profile:
    """64 ConnectX-5 PFs with 63 VFs each (4,032 VFs), one IOMMU group per function."""
    return _scale_machine("scale", [SCALE_VFS_PER_PF] * SCALE_PFS)


#: A sized scale machine's name: ``scale-1000`` has 1,000 functions.
SCALE_SIZED_PREFIX = "scale-"
#: Functions a sized scale machine has per PF: its root port, the PF, up to 63 VFs.
_SCALE_BLOCK = 2 + SCALE_VFS_PER_PF
#: PFs sit on buses 0x10 to 0xff.
_SCALE_MAX_PFS = 0x100 - 0x10


def scale_vfs(functions: int) -> list[int]:
    """How many VFs each PF of a ``scale-N`` machine has, so that the host bridge, the
    root ports, the PFs and their VFs make *functions* in all (3 at least)."""
    if functions < 3:
        raise ValueError("a scale machine has at least 3 functions (host bridge, port, PF)")
    rest = functions - 1  # the host bridge
    pfs = -(-rest // _SCALE_BLOCK)
    if pfs > _SCALE_MAX_PFS:
        raise ValueError(f"a scale machine has at most {_SCALE_MAX_PFS * _SCALE_BLOCK + 1} "
                         "functions")
    vfs = rest - 2 * pfs
    return [vfs // pfs + (1 if i < vfs % pfs else 0) for i in range(pfs)]


def _scale_machine(name: str, vfs_per_pf: list[int]) -> Profile:
    """A host bridge and, per entry, a root port with a ConnectX-5 PF and that many VFs;
    one IOMMU group per function."""
    devices = [_dev("0000:00:00.0", "8086:2f00", 0x060000, 0x02, None, 0, subsystem=(0x8086, 0))]
    group = 1
    for i, vf_count in enumerate(vfs_per_pf):
        port = f"0000:00:{2 + i // 8:02x}.{i % 8}"
        devices.append(_dev(port, "8086:2f04", 0x060400, 0x02, None, group, "pcieport",
                            (0x8086, 0)))
        group += 1
        bus = 0x10 + i
        pf = f"0000:{bus:02x}:00.0"
        devices.append(_dev(pf, "15b3:1017", 0x020000, 0x00, port, group, "mlx5_core",
                            (0x15B3, 0x0007), reset_methods=("flr", "bus"),
                            total_vfs=vf_count))
        group += 1
        for vf in range(1, vf_count + 1):
            devices.append(_dev(f"0000:{bus:02x}:{vf // 8:02x}.{vf % 8}", "15b3:1018",
                                0x020000, 0x00, port, group, "mlx5_core", (0x15B3, 0x0007),
                                reset_methods=("flr",), physfn=pf))
            group += 1
    return Profile(
        name=name,
        description=f"{len(vfs_per_pf)} ConnectX-5 PFs with {sum(vfs_per_pf)} VFs in all",
        iommu=True,
        devices=tuple(sorted(devices, key=lambda d: d.address)),
        modules=MODULES,
        boot_modules=("mlx5_core",),
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-sim-amd64 ro intel_iommu=on iommu=pt",
        mounts=("sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
                "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
                "/dev/nvme0n1p2 / ext4 rw,relatime 0 0"),
    )


def _sized_scale(name: str) -> Profile | None:
    """The ``scale-N`` machine *name* asks for, or None when it names none."""
    count = name[len(SCALE_SIZED_PREFIX):]
    if not name.startswith(SCALE_SIZED_PREFIX) or not count.isdigit() or count[0] == "0":
        return None
    try:
        return _scale_machine(name, scale_vfs(int(count)))
    except ValueError:
        return None


# The modules of the test guest's kernel (Debian 12's 6.1): aliases and dependencies as
# its modules.alias and modules.dep list them, trimmed to the guest's devices.
TEST_GUEST_MODULES: tuple[ModuleSpec, ...] = (
    ModuleSpec("pcieport", "pcieport", ("pci:v*d*sv*sd*bc06sc04i00",), builtin=True),
    ModuleSpec("lpc_ich", "lpc_ich", ("pci:v00008086d00002918sv*sd*bc*sc*i*",), size=28672),
    ModuleSpec("i2c_smbus", size=20480),
    ModuleSpec("i2c_i801", "i801_smbus", ("pci:v00008086d00002930sv*sd*bc*sc*i*",),
               depends=("i2c_smbus",), size=36864),
    ModuleSpec("libahci", size=49152),
    ModuleSpec("ahci", "ahci", ("pci:v*d*sv*sd*bc01sc06i01*",
                                "pci:v00008086d00002922sv*sd*bc*sc*i*"),
               depends=("libahci",), size=49152),
    ModuleSpec("virtio", size=20480),
    ModuleSpec("virtio_pci", "virtio-pci", ("pci:v00001AF4d*sv*sd*bc*sc*i*",),
               depends=("virtio",), size=24576),
    ModuleSpec("drm", size=618496),
    ModuleSpec("bochs", "bochs-drm", ("pci:v00001234d00001111sv*sd*bc*sc*i*",),
               depends=("drm",), size=16384),
    ModuleSpec("snd_hda_codec", size=184320),
    ModuleSpec("snd_hda_intel", "snd_hda_intel", ("pci:v00008086d00002668sv*sd*bc*sc*i*",),
               depends=("snd_hda_codec",), size=61440),
    ModuleSpec("e1000e", "e1000e", ("pci:v00008086d000010D3sv*sd*bc*sc*i*",), size=315392),
    ModuleSpec("xhci_hcd", size=319488),
    ModuleSpec("xhci_pci", "xhci_hcd", ("pci:v*d*sv*sd*bc0Csc03i30*",),
               depends=("xhci_hcd",), size=24576),
    ModuleSpec("irqbypass", size=16384),
    ModuleSpec("vfio", size=49152, dev_nodes=("/dev/vfio/vfio",)),
    ModuleSpec("vfio_iommu_type1", depends=("vfio",), size=45056),
    ModuleSpec("vfio_virqfd", size=16384),
    ModuleSpec("vfio_pci_core", depends=("vfio", "vfio_virqfd", "irqbypass"), size=73728),
    # modprobe vfio-pci also loads vfio_iommu_type1 (vfio's soft dependency).
    ModuleSpec("vfio_pci", "vfio-pci", ("vfio_pci:v*d*sv*sd*bc*sc*i*",),
               depends=("vfio_pci_core", "vfio_iommu_type1"), size=16384),
)

_QEMU = (0x1AF4, 0x1100)  # QEMU's default subsystem id for the devices it emulates


def _test_guest() -> Profile:
    """The QEMU guest of the real-kernel tier (tests/vm/layout.py), as its kernel sees it.

    q35 with an emulated Intel IOMMU: a GPU-like two-function slot behind root port
    00:02.0 (a VGA and an HDA controller, one IOMMU group), an e1000e, a qemu-xhci, a
    virtio GPU behind a port without x-speed=5 (its bus reset fails ENOTTY) and an
    ich9-ahci, each behind a root port of its own; q35's own functions; the two virtio-9p
    devices that carry the guest's filesystems. Ids, groups and reset methods as the
    guest lists them; nothing configures the NIC; a blank disk hangs off the ich9-ahci.
    """
    port = ("1b36:000c", 0x060400, 0x00)
    ports = {slot: _dev(f"0000:00:{slot:02x}.0", port[0], port[1], port[2], None, group,
                        "pcieport", (0x1B36, 0))
             for slot, group in ((2, 1), (3, 2), (4, 3), (5, 4), (6, 5))}
    devices = [
        _dev("0000:00:00.0", "8086:29c0", 0x060000, 0x00, None, 0, subsystem=_QEMU),
        *ports.values(),
        _dev("0000:00:10.0", "1af4:1009", 0x000200, 0x00, None, 6, "virtio-pci", (0x1AF4, 9)),
        _dev("0000:00:11.0", "1af4:1009", 0x000200, 0x00, None, 7, "virtio-pci", (0x1AF4, 9)),
        _dev("0000:00:1f.0", "8086:2918", 0x060100, 0x02, None, 8, "lpc_ich", _QEMU),
        _dev("0000:00:1f.2", "8086:2922", 0x010601, 0x02, None, 8, "ahci", _QEMU),
        _dev("0000:00:1f.3", "8086:2930", 0x0C0500, 0x02, None, 8, "i801_smbus", _QEMU),
        # Only a bus reset, which fails while the HDA function shares the bus.
        _dev("0000:01:00.0", "1234:1111", 0x030000, 0x02, "0000:00:02.0", 9, "bochs-drm",
             _QEMU, boot_vga=True, reset_methods=("bus",), children=Children(drm_card=0)),
        _dev("0000:01:00.1", "8086:2668", 0x040300, 0x01, "0000:00:02.0", 9, "snd_hda_intel",
             _QEMU, children=Children(sound_card=0, pcm=("D0p", "D0c"))),
        _dev("0000:02:00.0", "8086:10d3", 0x020000, 0x00, "0000:00:03.0", 10, "e1000e",
             (0x8086, 0), reset_methods=("pm", "bus"),
             children=Children(net=NetIface("enp2s0", "52:54:00:12:34:56", 2, up=False))),
        _dev("0000:03:00.0", "1b36:000d", 0x0C0330, 0x01, "0000:00:04.0", 11, "xhci_hcd",
             _QEMU, reset_methods=("bus",), children=Children(usb_buses=(1, 2))),
        _dev("0000:04:00.0", "1af4:1050", 0x038000, 0x01, "0000:00:05.0", 12, "virtio-pci",
             _QEMU, reset_methods=("flr", "pm", "bus"),
             # Its port has no x-speed=5: the link never reports active after a bus reset.
             reset_outcomes=(("bus", "enotty"),)),
        # The tier's raw 64 MiB disk (tests/vm/layout.py) on its first port; q35's own
        # AHCI at 00:1f.2 probes first and takes ata1-6 and scsi hosts 0-5.
        _dev("0000:05:00.0", "8086:2922", 0x010601, 0x02, "0000:00:06.0", 13, "ahci", _QEMU,
             reset_methods=("bus",),
             children=Children(disks=(Disk("sda", 0, 0, port=7, scsi_host=6,
                                           sectors=131072),))),
    ]
    return Profile(
        name="test-guest",
        description="the real-kernel tier's QEMU guest: q35, emulated Intel IOMMU, a "
                    "VGA+HDA slot, e1000e, qemu-xhci, virtio-gpu, ich9-ahci",
        iommu=True,
        devices=tuple(sorted(devices, key=lambda d: d.address)),
        modules=TEST_GUEST_MODULES,
        boot_modules=("virtio_pci", "lpc_ich", "i2c_i801", "ahci", "bochs", "snd_hda_intel",
                      "e1000e", "xhci_pci"),
        cmdline="console=ttyS0 intel_iommu=on rdinit=/init panic=-1",
        mounts=(
            "overlay / overlay rw,relatime,lowerdir=/lower,upperdir=/upper/data,"
            "workdir=/upper/work 0 0",
            "proc /proc proc rw,relatime 0 0",
            "sysfs /sys sysfs rw,relatime 0 0",
            "devtmpfs /dev devtmpfs rw,relatime,size=1001432k,nr_inodes=250358,mode=755,"
            "inode64 0 0",
            "run /run tmpfs rw,relatime,mode=755,inode64 0 0",
            "results /run/vfiod-vm 9p rw,sync,dirsync,relatime,access=client,msize=512000,"
            "trans=virtio 0 0",
            "tmp /tmp tmpfs rw,relatime,inode64 0 0",
        ),
        vfio_cdev=False,  # 6.1: no /dev/vfio/devices
    )


class _Profiles(Mapping[str, Profile]):
    """Profiles by name, each built the first time it is asked for."""

    _builders = {
        "seed-x99": lambda: _seed_x99(iommu=True),
        "seed-x99-noiommu": lambda: _seed_x99(iommu=False),
        "seed-x99-shared-bus": lambda: _seed_x99(iommu=True, shared_buses=True),
        "scale": _scale,
        "test-guest": _test_guest,
        "dying-cards": _dying_cards,
    }

    def __init__(self) -> None:
        self._built: dict[str, Profile] = {}

    def __getitem__(self, name: str) -> Profile:
        if name not in self._built:
            builder = self._builders.get(name)
            # ``scale-N`` (benchmarks' growth): any size, built on demand, not listed.
            built = builder() if builder is not None else _sized_scale(name)
            if built is None:
                raise KeyError(name)
            self._built[name] = built
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


#: Every profile by name: ``seed-x99``, ``seed-x99-noiommu``, ``seed-x99-shared-bus``,
#: ``scale``, ``test-guest``, ``dying-cards``; and, not listed, ``scale-N``: a scale
#: machine with N functions (3 to 15,601), for the benchmarks' growth figures.
PROFILES: Mapping[str, Profile] = _Profiles()

