"""The distribution tier's QEMU machine: the real-kernel tier's flags (TCG, q35 with an
emulated Intel IOMMU and interrupt remapping), a layout of its own, the image as a
virtio disk, and a serial console the host follows.

| guest address | device | why |
| --- | --- | --- |
| 0000:01:00.0 / .1 | VGA + intel-hda, one slot, one IOMMU group | the hot reset of a GPU with its audio |
| 0000:02:00.0 | e1000e (8086:10d3) | claimed at boot by the shim (boot = "vfio") |
| 0000:03:00.0 | e1000e | bound and unbound at run time; the watchdog and reboot checks |
| 0000:04:00.0 | virtio-gpu-pci | reset by FLR; the polkit checks' device |
| 0000:00:10.0 | virtio-blk | the image (never touched) |
"""

from __future__ import annotations

from pathlib import Path

from tests.vm import layout
from tests.vm.layout import Function, Port
from tests.vm.marker import GUEST_MARKER

QEMU = "qemu-system-x86_64"
DISK_SLOT = 0x10

PORTS: tuple[Port, ...] = (
    Port("rp1", 0x02, 1, True, (
        Function("vga", "VGA", 0, ("multifunction=on",)),
        Function("hda", "intel-hda", 1),
    )),
    Port("rp2", 0x03, 2, True, (Function("boot_nic", "e1000e", 0, ("netdev=n0",)),)),
    Port("rp3", 0x04, 3, True, (Function("nic", "e1000e", 0, ("netdev=n1",)),)),
    Port("rp4", 0x05, 4, True, (Function("flr_gpu", "virtio-gpu-pci", 0),)),
)


def address(role: str) -> str:
    """The guest address of the function with this role."""
    return layout.address(role, PORTS)


def kernel_cmdline(boot: int) -> str:
    """Root on the virtio disk, systemd as PID 1, the IOMMU, the marker, the boot number."""
    return " ".join((
        "root=/dev/vda", "rw", "console=ttyS0", "intel_iommu=on", GUEST_MARKER,
        f"vfiod.distroboot={boot}",
        # Under TCG on a loaded machine the kernel's check of the IO-APIC timer through
        # the remapped interrupt can miss its window and panic ("timer doesn't work
        # through Interrupt-remapped IO-APIC", seen at load 12): skip that check.
        "no_timer_check",
        # A kernel that cannot mount its root panics; panic=-1 reboots at once, and
        # -no-reboot makes QEMU exit instead of waiting for the timeout.
        "panic=-1",
    ))


def _escape(value: str) -> str:
    return value.replace(",", ",,")


def device_options() -> list[str]:
    """The root ports and what sits behind them, with their backends."""
    return (["-audiodev", "none,id=snd0",
             "-netdev", "user,id=n0,restrict=on", "-netdev", "user,id=n1,restrict=on"]
            + layout.port_options(PORTS))


def qemu_command(kernel: Path, initrd: Path, disk: Path, serial_log: Path,
                 boot: int) -> list[str]:
    """The full QEMU command line for one boot of the image."""
    return [
        QEMU, "-name", f"vfiod-distro-boot{boot}", "-no-user-config", "-nodefaults",
        "-accel", "tcg,thread=multi",
        "-machine", "q35,kernel-irqchip=split", "-cpu", "max", "-smp", "2", "-m", "2G",
        "-no-reboot", "-display", "none",
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        "-chardev", f"file,id=ser0,path={_escape(str(serial_log))}", "-serial", "chardev:ser0",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", kernel_cmdline(boot),
        *device_options(),
        "-drive", f"file={_escape(str(disk))},format=raw,if=none,id=root",
        "-device", f"virtio-blk-pci,drive=root,bus=pcie.0,addr=0x{DISK_SLOT:x}",
    ]
