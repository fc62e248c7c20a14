"""An unprivileged caller (uid 65534, the private bus with the project's policy) against
every method, property and signal vfiod exports, spoofing included.

Counted, and zero: host writes (the simulated machine hashed before and after),
changing calls not refused with AccessDenied, property writes accepted, replies outside
the documented error names, vfiod's name owned by the caller, and forged signals
believed by a running ``vfioctl monitor``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from integration.helpers import Vfiod
from integration.vfioctl_helpers import vfioctl_argv

from .machine import changed, documented, fingerprint
from .report import Summary

SCENARIO = "unprivileged caller"
TESTS = Path(__file__).resolve().parents[1]
#: Methods that change the machine or the daemon (the names of this round's contract):
#: every one needs authorization. Methods added later are covered by the host-write and
#: error-name counts.
CHANGING = {"Bind", "Unbind", "Reset", "Reload", "BindJob", "UnbindJob", "ResetJob", "Cancel"}


def test_an_unprivileged_caller_changes_nothing_and_spoofs_nobody(
        vfiod: Vfiod, summary: Summary) -> None:
    before = fingerprint(vfiod.sim_root)
    monitor = subprocess.Popen(vfioctl_argv(vfiod.address, "monitor", "--json"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # its subscriptions in place
        result = subprocess.run(
            [sys.executable, "-m", "torture.unprivileged_client", vfiod.address,
             str(monitor.pid)], cwd=TESTS, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        got = json.loads(result.stdout)
        writes = changed(before, fingerprint(vfiod.sim_root))
        # A real change after the forged signals: the monitor shows it (it is listening).
        assert vfiod.call("Bind", "sa{sv}", "0000:09:00.0", "0").returncode == 0
        time.sleep(1.0)
    finally:
        monitor.terminate()
        out, err = monitor.communicate(timeout=10)
    assert got["uid"] == 65534 and got["monitor_found"]
    answers = [m[3] for m in got["methods"]] + [p[3] for p in got["properties"]]
    not_denied = [m for m in got["methods"] if m[2] in CHANGING
                  and m[3] != "org.freedesktop.DBus.Error.AccessDenied"]
    set_accepted = [p for p in got["properties"] if p[2] == "Set" and p[3] == "success"]
    undocumented = [a for a in answers if a != "success" and not documented(a)]
    believed = [line for line in out.splitlines() if "SPOOFED" in line]
    assert any("0000:09:00.0" in line and "vfio-pci" in line for line in out.splitlines()), out
    owned = int(not got["own_name"].startswith("org.freedesktop.DBus.Error."))

    summary.add(SCENARIO, "method calls (every method of every object)", len(got["methods"]))
    summary.add(SCENARIO, "property reads and writes", len(got["properties"]))
    summary.add(SCENARIO, "forged signals sent (broadcast and to vfioctl monitor)",
                got["signals"])
    summary.add(SCENARIO, "host writes (files changed)", len(writes), must_be_zero=True)
    summary.add(SCENARIO, "changing calls not denied", len(not_denied), must_be_zero=True)
    summary.add(SCENARIO, "property writes accepted", len(set_accepted), must_be_zero=True)
    summary.add(SCENARIO, "replies outside the documented error names", len(undocumented),
                must_be_zero=True)
    summary.add(SCENARIO, "vfiod's bus name owned by the caller", owned, must_be_zero=True)
    summary.add(SCENARIO, "forged signals vfioctl monitor believed", len(believed),
                must_be_zero=True)
    summary.add(SCENARIO, "tracebacks (daemon log, monitor)",
                vfiod.log().count("Traceback") + err.count("Traceback"), must_be_zero=True)
    assert writes == []
    assert not_denied == [] and set_accepted == [] and undocumented == []
    assert not owned and believed == []
    assert "Traceback" not in vfiod.log() and "Traceback" not in err
