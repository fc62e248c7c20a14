"""sd_notify: the status line, the watchdog interval, and sending without systemd."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from vfiod.daemon.notify import Notifier, status_line, watchdog_interval
from vfiod.records import DeviceStatus, State


def _status(address: str, state: State, driver: str) -> DeviceStatus:
    return DeviceStatus(address=address, vendor_id=0x10DE, device_id=0x1B06, name="GPU",
                        class_code=0x030000, driver=driver, host_driver="nvidia", state=state,
                        iommu_group=31, holder="", holder_pid=0, reset_methods=[],
                        healthy=True, boot_vga=False, is_bridge=False)


def test_status_line_counts_devices_on_vfio_pci_and_in_guests() -> None:
    line = status_line([_status("0000:06:00.0", State.GUEST, "vfio-pci"),
                        _status("0000:06:00.1", State.VFIO, "vfio-pci"),
                        _status("0000:09:00.0", State.VFIO, "vfio-pci"),
                        _status("0000:05:00.0", State.HOST, "nvidia")])
    assert line == "3 devices on vfio-pci, 1 in a guest"


def test_status_line_mentions_devices_in_error() -> None:
    line = status_line([_status("0000:06:00.0", State.ERROR, "")])
    assert line == "0 devices on vfio-pci, 0 in a guest, 1 in error"


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0


def test_watchdog_meant_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None


def test_notifications_arrive_on_the_notify_socket(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        notifier = Notifier()
        notifier.ready("0 devices on vfio-pci, 0 in a guest")
        notifier.status("0 devices on vfio-pci, 0 in a guest")  # unchanged: not sent
        notifier.status("2 devices on vfio-pci, 0 in a guest")
        sock.settimeout(5)
        assert sock.recv(4096) == b"READY=1\nSTATUS=0 devices on vfio-pci, 0 in a guest"
        assert sock.recv(4096) == b"STATUS=2 devices on vfio-pci, 0 in a guest"


def test_a_missing_notify_socket_is_not_an_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
    notifier = Notifier()
    assert notifier.send("READY=1") is False
    assert notifier.send("STATUS=x") is False  # and it does not retry


def test_without_a_service_manager_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().send("READY=1") is False
