"""The reset ladder through vfiod and vfioctl, on the simulated dying-cards machine."""

from __future__ import annotations

import json
from collections.abc import Callable

from .helpers import Vfiod, knobs
from .vfioctl_helpers import error_line, vfioctl

AMD = "0000:01:00.0"  # the AMD reset bug: comes back by a remove and rescan
USB = "0000:04:00.0"  # never comes back once a guest used it


def status_of(daemon: Vfiod, address: str) -> dict[str, object]:
    result = vfioctl(daemon.address, "status", address, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = data if isinstance(data, list) else data.get("devices", [data])
    return next(r for r in rows if r.get("address") == address)


def test_an_amd_card_a_guest_used_is_reset_by_remove_and_rescan(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod("dying-cards", **knobs(guest_used=[AMD])).start()
    assert vfioctl(daemon.address, "bind", AMD).returncode == 0
    result = vfioctl(daemon.address, "reset", AMD)
    assert result.returncode == 0, result.stderr
    assert "reset (remove_rescan), healthy" in result.stdout
    row = status_of(daemon, AMD)
    assert row["state"] == "vfio" and row["healthy"] is True


def test_a_card_that_never_comes_back_is_7_error_and_unhealthy_with_what_is_left(
        make_vfiod: Callable[..., Vfiod]) -> None:
    daemon = make_vfiod("dying-cards", **knobs(guest_used=[USB])).start()
    assert vfioctl(daemon.address, "bind", USB).returncode == 0
    result = vfioctl(daemon.address, "reset", USB)
    assert result.returncode == 7
    line = error_line(result)
    assert "pm, bus, remove_rescan" in line and "reboot the host" in line
    row = status_of(daemon, USB)
    assert row["state"] == "error" and row["healthy"] is False
    assert "suspend and resume" in str(row["error"])
    assert "suspend and resume" in daemon.log_path.read_text()
