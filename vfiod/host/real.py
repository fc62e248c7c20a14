"""The real machine: sysfs writes go to the kernel, modules load with modprobe."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Mapping

from vfiod.errors import HostWriteError, ModuleLoadError
from vfiod.host import paths, vfio
from vfiod.host.base import EventSource, Host, UEvent, write_once

MODPROBE_TIMEOUT = 30.0


class RealHost(Host):
    """The running kernel, seen through ``root`` (``/`` except in tests of the reads)."""

    simulated = False

    def _write(self, path: str, value: str) -> None:
        write_once(self.real_path(path), value)

    def exclusive_open_errno(self, node: str) -> int:
        # O_NONBLOCK: a removable drive without media must not make us wait for it.
        try:
            fd = os.open(self.real_path(node),
                         os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            return exc.errno or errno.EIO
        os.close(fd)
        return 0

    def vfio_hot_reset(self, address: str, group_fds: Mapping[int, int] | None = None
                       ) -> list[str]:
        group = self.link_name(paths.device_file(address, "iommu_group"))
        if group is None or not group.isdigit():
            raise HostWriteError(paths.VFIO_DIR, "hot reset", errno.ENODEV, address)
        try:
            return vfio.hot_reset(self.real_path(paths.VFIO_DIR), int(group), address,
                                  group_fds)
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
        return self.exists(paths.module_dir(name))

    def open_events(self) -> EventSource:
        return UdevEventSource(udevd_running(self))


def udevd_running(host: Host) -> bool:
    """True when systemd-udevd runs now on *host* (its /proc, under its root).

    Its control socket is no proof: udevd leaves it behind when it exits, and systemd's
    socket unit keeps it while udevd is stopped; the udev monitor then receives nothing.
    """
    return any(host.read_text(paths.process_file(pid, "comm")) in ("systemd-udevd", "udevd")
               for pid in host.pids())


class UdevEventSource(EventSource):
    """uevents from pyudev: processed ones from udevd when it runs, raw kernel ones else.

    pyudev's ``source='udev'`` monitor receives nothing without systemd-udevd, so the
    kernel's netlink group is used then (observed in the QEMU guest).
    """

    def __init__(self, udevd: bool) -> None:
        import pyudev  # imported here: the simulated host and vfioctl never need it

        self._context = pyudev.Context()
        source = "udev" if udevd else "kernel"
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
