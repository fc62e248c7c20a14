"""The real machine: sysfs writes go to the kernel, modules load with modprobe."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

from vfiod.errors import HostWriteError, ModuleLoadError
from vfiod.host import vfio
from vfiod.host.base import EventSource, Host, UEvent, module_dir_name, write_once

MODPROBE_TIMEOUT = 30.0


class RealHost(Host):
    """The running kernel, seen through ``root`` (``/`` except in tests of the reads)."""

    simulated = False

    def _write(self, path: str, value: str) -> None:
        write_once(self.path(path), value)

    def vfio_hot_reset(self, address: str) -> list[str]:
        group = self.link_name(f"/sys/bus/pci/devices/{address}/iommu_group")
        if group is None or not group.isdigit():
            raise HostWriteError("/dev/vfio", "hot reset", errno.ENODEV, address)
        try:
            return vfio.hot_reset(self.path("/dev/vfio"), int(group), address)
        except vfio.VfioError as exc:
            raise HostWriteError(exc.node, "hot reset", exc.errno or errno.EIO, address) from None

    def load_module(self, name_or_modalias: str) -> None:
        modprobe = shutil.which("modprobe") or "/sbin/modprobe"
        try:
            proc = subprocess.run(
                [modprobe, "-q", "-b", "--", name_or_modalias],
                capture_output=True, text=True, timeout=MODPROBE_TIMEOUT, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModuleLoadError(f"modprobe {name_or_modalias} failed: {exc}") from None
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise ModuleLoadError(f"modprobe {name_or_modalias} failed: {why[0]}")

    def module_loaded(self, name: str) -> bool:
        return self.exists(f"/sys/module/{module_dir_name(name)}")

    def open_events(self) -> EventSource:
        return UdevEventSource()


def udevd_running(proc: str = "/proc") -> bool:
    """True when systemd-udevd runs now.

    Its control socket is no proof: udevd leaves it behind when it exits, and systemd's
    socket unit keeps it while udevd is stopped; the udev monitor then receives nothing.
    """
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/comm", encoding="utf-8") as f:
                if f.read().strip() in ("systemd-udevd", "udevd"):
                    return True
        except OSError:
            continue
    return False


class UdevEventSource(EventSource):
    """uevents from pyudev: processed ones from udevd when it runs, raw kernel ones else.

    pyudev's ``source='udev'`` monitor receives nothing without systemd-udevd, so the
    kernel's netlink group is used then (observed in the QEMU guest).
    """

    def __init__(self) -> None:
        import pyudev  # imported here: the simulated host and vfioctl never need it

        self._context = pyudev.Context()
        source = "udev" if udevd_running() else "kernel"
        self._monitor = pyudev.Monitor.from_netlink(self._context, source=source)
        self.source = source
        self._monitor.start()

    def fileno(self) -> int:
        return self._monitor.fileno()

    def receive(self) -> list[UEvent]:
        events: list[UEvent] = []
        while True:
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise
                break
            if device is None:
                return events
            props = {k: device.properties[k] for k in device.properties}
            events.append(UEvent(
                action=device.action or props.get("ACTION", ""),
                devpath=device.device_path,
                subsystem=device.subsystem or props.get("SUBSYSTEM", ""),
                properties=props,
            ))
        return events

    def close(self) -> None:
        # pyudev closes the netlink socket when the monitor is collected.
        self._monitor = None  # type: ignore[assignment]
