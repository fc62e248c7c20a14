"""The fence and bounded writes on the real kernel (issue 8, items 2 and 3).

A guest holding only a device fd (its group fd closed, or the fd received over a unix
socket) shows in /proc only as ``anon_inode:[vfio-device]``. vfiod's own open of the
group node fails EBUSY all the same: Unbind and Reset are refused InUse naming the pid
at once, nothing is written into the held device, Status answers meanwhile, and the
kernel logs no hung task. A write that stays in the kernel past the timeout (forced
here by taking the fence away, so that ``unbind`` reaches a held device) leaves the
group busy, reads nothing of the device, and finishes by itself when the holder exits.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from vfiod.engine import Engine
from vfiod.errors import Timeout
from vfiod.host.real import RealHost
from vfiod.records import State

from .. import layout
from . import pci
from .daemon import GuestVfiod, error, manager_call, returned, run, value
from .vfio_holder import Holder

NIC = layout.NIC
HOLDERS = {"device fd only": {"close_group": True}, "fd passed over a socket": {"passed": True}}


def dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def nic_bound(guest_vfiod: GuestVfiod, host: RealHost) -> int:
    """The NIC on vfio-pci through vfiod; its group number."""
    assert returned(guest_vfiod.call("Bind", "sa{sv}", NIC, "0")) == [NIC]
    return pci.group_of(host, NIC)


@pytest.mark.parametrize("kind", sorted(HOLDERS))
@pytest.mark.parametrize("operation", ["Unbind", "Reset"])
def test_a_guest_holding_only_a_device_fd_is_refused_at_once_naming_its_pid(
        guest_vfiod: GuestVfiod, host: RealHost, nic_bound: int, kind: str,
        operation: str) -> None:
    before = dmesg()
    holder = Holder(nic_bound, NIC, **HOLDERS[kind])
    try:
        assert holder.reply == "ready"
        node = f"/dev/vfio/{nic_bound}"
        assert host.holders([node]) == {}  # invisible to a scan of the group node
        reply, took = run(manager_call(guest_vfiod.address, operation, "sa{sv}", [NIC, {}]))
        name, message = error(reply)
        assert name == "org.vfiod1.Error.InUse", message
        assert f"(pid {holder.pid})" in message
        assert took < 1.0, f"{operation} took {took:.2f} s"
        status, status_took = run(manager_call(guest_vfiod.address, "Status"))
        rows = {row[0]: row for row in value(status)}
        assert status_took < 1.0
        assert rows[NIC][4] == "guest" and f"(pid {holder.pid})" in rows[NIC][6]
        assert pci.driver_of(host, NIC) == "vfio-pci"  # nothing was written into it
    finally:
        holder.stop()
    added = dmesg()[len(before):]
    assert "blocked for more than" not in added and "blocked until released" not in added


def test_a_write_blocked_past_its_timeout_leaves_the_group_busy_and_finishes_by_itself(
        host: RealHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vfiod.engine import plan

    engine = Engine(host, tmp_path / "state", write_timeout=1.0)
    engine.bind(NIC)
    group = pci.group_of(host, NIC)
    # Forced: without the fence (and the /proc check), unbind reaches a held device.
    monkeypatch.setattr(plan, "raise_fence", lambda *_args: None)
    monkeypatch.setattr(plan, "check_not_held", lambda *_args: None)
    finished = threading.Event()
    engine.set_listener(lambda _addresses: finished.set())
    holder = Holder(group, NIC, close_group=True)
    try:
        assert holder.reply == "ready"
        began = time.monotonic()
        with pytest.raises(Timeout) as timed_out:
            engine.unbind(NIC)
        assert time.monotonic() - began < 5.0
        assert "finishes the unbind by itself" in str(timed_out.value)
        row = engine.device_status(NIC)
        assert row.state is State.BUSY
        assert "blocked in the kernel since" in row.error
        assert f"(pid {holder.pid})" in row.error
        assert not finished.wait(1.0)  # nothing moves while the holder keeps the device
    finally:
        holder.stop()
    assert finished.wait(30.0), "the unbind did not finish once the holder exited"
    row = engine.device_status(NIC)
    assert row.state is State.HOST and row.driver == "e1000e"
    assert pci.driver_of(host, NIC) == "e1000e"
