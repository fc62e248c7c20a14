"""The conformance scenario: one scripted sequence of kernel writes, and what it shows.

``run(host)`` performs the same writes (and one ``modprobe vfio-pci``) on any Host and
returns a trace: for each step, the file and value written, the errno (0 for success),
then the state a user of sysfs can observe (each layout function's ``driver`` link,
``driver_override`` and ``reset_method`` as read, its IOMMU group, the entries of
/dev/vfio) and the uevents the step caused, in the kernel's order. The guest test
(guest/test_conformance.py) runs it against the real kernel and against the simulated
``test-guest`` profile and requires the two traces to be equal; the host test
(test_vm_scenario_on_sim.py) runs it on the simulated profile against the real kernel's
trace recorded in REAL_TRACE.

It lives with the tests, not in the package: it writes ``unbind`` and ``remove`` to
whatever host it is handed, and it is tied to the guest's layout (tests/vm/layout.py).

Preconditions, on both hosts: every layout function on its boot driver, no VFIO module
loaded, and an event source that delivers uevents as the kernel sends them (a SimHost,
or a RealHost while systemd-udevd is stopped). The steps cover every errno line of
shared/notes/kernel-facts.md.
"""

from __future__ import annotations

import errno
import json
import select
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vfiod.errors import HostWriteError
from vfiod.host.base import EventSource, Host, UEvent

from . import layout

#: The real kernel's trace of this scenario, as guest/test_conformance.py last recorded it.
REAL_TRACE = Path(__file__).with_name("data") / "real-trace.json"

PCI = "/sys/bus/pci"
PROBE = f"{PCI}/drivers_probe"
ABSENT = "0000:7f:1f.7"  # a well-formed address no device has
MODPROBE = "modprobe"  # a step's path when it loads a module instead of writing a file
#: The function whose synthetic "change" uevent marks the end of each step's events.
SENTINEL = "0000:00:00.0"
#: The uevents a step is judged by: the PCI functions, their VFIO groups, vfio-dev.
SUBSYSTEMS = ("pci", "vfio", "vfio-dev")
#: The keys the kernel itself puts in those uevents (libudev or udevd may add others).
STANDARD_KEYS = frozenset({
    "ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM", "DRIVER", "PCI_CLASS", "PCI_ID",
    "PCI_SUBSYS_ID", "PCI_SLOT_NAME", "MODALIAS", "MAJOR", "MINOR", "DEVNAME", "DEVMODE",
    "SYNTH_UUID"})
EVENT_TIMEOUT = 10.0


def dev(address: str, attr: str) -> str:
    """A PCI function's attribute, through /sys/bus/pci/devices."""
    return f"{PCI}/devices/{address}/{attr}"


def drv(driver: str, attr: str) -> str:
    """A PCI driver's control file."""
    return f"{PCI}/drivers/{driver}/{attr}"


@dataclass(frozen=True)
class Step:
    """One write (or module load) of the scenario and the errno kernel-facts.md gives it."""

    label: str
    path: str
    value: str
    errno: int = 0


NIC, VGA, HDA, GPU = layout.NIC, layout.VGA, layout.HDA, layout.VIRTIO_GPU

STEPS: tuple[Step, ...] = (
    # Bad writes while every function is on its host driver and vfio-pci is not loaded.
    Step("drivers_probe of an absent address", PROBE, ABSENT, errno.ENODEV),
    Step("drivers_probe of garbage", PROBE, "not-an-address", errno.ENODEV),
    Step("drivers_probe of a bound device changes nothing", PROBE, NIC),
    Step("zero-length write to drivers_probe", PROBE, ""),
    Step("unbind from a driver the device is not on", drv("ahci", "unbind"), NIC, errno.ENODEV),
    Step("unbind of an absent device", drv("e1000e", "unbind"), ABSENT, errno.ENODEV),
    Step("5000-byte driver_override", dev(NIC, "driver_override"), "x" * 5000, errno.EINVAL),
    Step("reset with a value other than 1", dev(NIC, "reset"), "2", errno.EINVAL),
    Step("unknown reset method", dev(NIC, "reset_method"), "warp", errno.EINVAL),
    Step("reset method the device does not have", dev(NIC, "reset_method"), "flr",
         errno.EINVAL),
    Step("malformed new_id", drv("e1000e", "new_id"), "zzzz", errno.EINVAL),
    Step("new_id the driver's table has", drv("e1000e", "new_id"), "8086 10d3", errno.EEXIST),
    Step("remove_id of an id never added", drv("e1000e", "remove_id"), "1234 5678",
         errno.ENODEV),
    Step("reset of a function without reset", dev(HDA, "reset"), "1", errno.ENOENT),
    Step("synthetic change uevent", dev(NIC, "uevent"), "change"),
    # The NIC to vfio-pci before vfio-pci is loaded; loading it binds the NIC.
    Step("NIC: driver_override vfio-pci", dev(NIC, "driver_override"), "vfio-pci"),
    Step("NIC: zero-length driver_override keeps it", dev(NIC, "driver_override"), ""),
    Step("NIC: unbind from e1000e", dev(NIC, "driver/unbind"), NIC),
    Step("NIC: driver/unbind without a driver", dev(NIC, "driver/unbind"), NIC, errno.ENOENT),
    Step("NIC: bind to a driver the override does not name", drv("e1000e", "bind"), NIC,
         errno.ENODEV),
    Step("NIC: drivers_probe without vfio-pci binds nothing", PROBE, NIC),
    Step("modprobe vfio-pci binds the waiting NIC", MODPROBE, "vfio-pci"),
    Step("NIC: vfio-pci bind when already bound", drv("vfio-pci", "bind"), NIC, errno.EBUSY),
    Step("vfio-pci: malformed new_id", drv("vfio-pci", "new_id"), "zzzz", errno.EINVAL),
    Step("vfio-pci: remove_id of an id never added", drv("vfio-pci", "remove_id"),
         "1234 5678", errno.ENODEV),
    # And back to e1000e.
    Step("NIC: clear driver_override", dev(NIC, "driver_override"), "\n"),
    Step("NIC: unbind from vfio-pci", dev(NIC, "driver/unbind"), NIC),
    Step("NIC: vfio-pci bind with an empty override", drv("vfio-pci", "bind"), NIC,
         errno.ENODEV),
    Step("NIC: vfio-pci unbind when not on vfio-pci", drv("vfio-pci", "unbind"), NIC,
         errno.ENODEV),
    Step("NIC: drivers_probe binds e1000e", PROBE, NIC),
    # The two-function slot: /dev/vfio/9 comes with the first, goes with the last.
    Step("VGA: driver_override vfio-pci", dev(VGA, "driver_override"), "vfio-pci"),
    Step("VGA: unbind from bochs-drm", dev(VGA, "driver/unbind"), VGA),
    Step("VGA: drivers_probe binds vfio-pci", PROBE, VGA),
    Step("HDA: driver_override vfio-pci", dev(HDA, "driver_override"), "vfio-pci"),
    Step("HDA: unbind from snd_hda_intel", dev(HDA, "driver/unbind"), HDA),
    Step("HDA: drivers_probe binds vfio-pci", PROBE, HDA),
    Step("VGA: clear driver_override", dev(VGA, "driver_override"), "\n"),
    Step("VGA: unbind from vfio-pci", dev(VGA, "driver/unbind"), VGA),
    Step("VGA: drivers_probe binds bochs-drm", PROBE, VGA),
    Step("HDA: clear driver_override", dev(HDA, "driver_override"), "\n"),
    Step("HDA: unbind from vfio-pci, the group's last", dev(HDA, "driver/unbind"), HDA),
    Step("HDA: drivers_probe binds snd_hda_intel", PROBE, HDA),
    # remove + rescan forgets driver_override.
    Step("NIC: driver_override vfio-pci again", dev(NIC, "driver_override"), "vfio-pci"),
    Step("NIC: remove", dev(NIC, "remove"), "1"),
    Step("rescan brings the NIC back on e1000e", f"{PCI}/rescan", "1"),
    # drivers_autoprobe does not stop a PCI rescan from probing what it adds
    # (pci_bus_add_device attaches it itself): the bus's own rescan binds e1000e.
    Step("drivers_autoprobe off", f"{PCI}/drivers_autoprobe", "0"),
    Step("NIC: driver_override vfio-pci before its remove", dev(NIC, "driver_override"),
         "vfio-pci"),
    Step("NIC: remove with autoprobe off", dev(NIC, "remove"), "1"),
    Step("the NIC bus's own rescan binds e1000e all the same",
         "/sys/class/pci_bus/0000:02/rescan", "1"),
    Step("drivers_autoprobe on", f"{PCI}/drivers_autoprobe", "1"),
    # reset_method and reset.
    Step("NIC: select bus", dev(NIC, "reset_method"), "bus"),
    Step("NIC: select bus then pm", dev(NIC, "reset_method"), "bus pm"),
    Step("NIC: zero-length reset_method keeps the selection", dev(NIC, "reset_method"), ""),
    Step("NIC: a blank line disables every method", dev(NIC, "reset_method"), "\n"),
    Step("NIC: reset with every method disabled", dev(NIC, "reset"), "1", errno.ENOTTY),
    Step("NIC: default restores the methods", dev(NIC, "reset_method"), "default"),
    Step("NIC: reset", dev(NIC, "reset"), "1"),
    Step("NIC: reset with 0", dev(NIC, "reset"), "0", errno.EINVAL),
    Step("VGA: bus reset with the HDA function on the bus", dev(VGA, "reset"), "1",
         errno.ENOTTY),
    Step("virtio GPU: select bus", dev(GPU, "reset_method"), "bus"),
    Step("virtio GPU: bus reset below a port without x-speed", dev(GPU, "reset"), "1",
         errno.ENOTTY),
    Step("virtio GPU: default", dev(GPU, "reset_method"), "default"),
    Step("virtio GPU: reset (flr)", dev(GPU, "reset"), "1"),
    # The rest leaves the GPU-like slot as only a reboot undoes (guest tests that run it
    # go last). Selecting a method probes it again: the VGA's listed bus reset cannot be
    # selected while the HDA shares the bus, and default keeps only what passes now.
    Step("VGA: select bus with the HDA on the bus", dev(VGA, "reset_method"), "bus",
         errno.EINVAL),
    Step("VGA: default probes again and keeps no method", dev(VGA, "reset_method"),
         "default"),
    Step("VGA: reset without a method", dev(VGA, "reset"), "1", errno.ENOTTY),
    Step("HDA: remove", dev(HDA, "remove"), "1"),
    Step("VGA: default alone on its bus lists bus again", dev(VGA, "reset_method"), "default"),
    # A re-added function 1 is not yet marked multifunction when its IOMMU group is
    # chosen: the HDA comes back in a group of its own.
    Step("rescan brings the HDA back in a new IOMMU group", f"{PCI}/rescan", "1"),
    # Methods are probed as a device is added: the VGA added next to the HDA has none,
    # and no reset or reset_method file; function 0 joins the group of function 1.
    Step("VGA: remove", dev(VGA, "remove"), "1"),
    Step("rescan adds the VGA into the HDA's group, without reset", f"{PCI}/rescan", "1"),
    Step("HDA: remove again", dev(HDA, "remove"), "1"),
    Step("VGA: remove again", dev(VGA, "remove"), "1"),
    Step("rescan adds the VGA (bus listed) then the HDA, each in a new group",
         f"{PCI}/rescan", "1"),
)


@dataclass(frozen=True)
class Event:
    """What a step's uevent is judged by."""

    action: str
    subsystem: str
    devpath: str
    slot: str | None  # PCI_SLOT_NAME
    driver: str | None  # DRIVER
    devname: str | None  # DEVNAME
    keys: tuple[str, ...]  # the standard keys it carries, sorted


@dataclass(frozen=True)
class Function:
    """What sysfs shows of one layout function (None: the file is absent)."""

    address: str
    driver: str | None
    driver_override: str | None  # as read, newline included
    reset_method: str | None  # as read, newline included
    iommu_group: str | None


@dataclass(frozen=True)
class Observation:
    """One step and what it did."""

    step: str
    path: str
    value: str
    errno: int
    functions: tuple[Function, ...]
    dev_vfio: tuple[str, ...]
    events: tuple[Event, ...]


def run(host: Host) -> list[Observation]:
    """Run every step on *host*; the trace, starting with the state before the first."""
    source = host.open_events()
    try:
        trace = [observe(host, Step("start", "", ""), 0, ())]
        for step in STEPS:
            code = perform(host, step)
            trace.append(observe(host, step, code, step_events(host, source)))
        return trace
    finally:
        source.close()


def perform(host: Host, step: Step) -> int:
    """Do one step; the errno it failed with, 0 for success."""
    if step.path == MODPROBE:
        host.load_module(step.value)
        return 0
    try:
        host.write_attr(step.path, step.value)
    except HostWriteError as exc:
        return exc.errno
    return 0


def observe(host: Host, step: Step, code: int, events: tuple[Event, ...]) -> Observation:
    """The state after *step*."""
    return Observation(step.label, step.path, step.value, code,
                       tuple(function_state(host, a) for a in layout.ALL_FUNCTIONS),
                       tuple(host.listdir("/dev/vfio")), events)


def function_state(host: Host, address: str) -> Function:
    """One function's driver link, driver_override, reset_method and IOMMU group."""
    def raw(attr: str) -> str | None:
        data = host.read_bytes(dev(address, attr))
        return None if data is None else data.decode(errors="replace")

    return Function(address, host.link_name(dev(address, "driver")), raw("driver_override"),
                    raw("reset_method"), host.link_name(dev(address, "iommu_group")))


def step_events(host: Host, source: EventSource) -> tuple[Event, ...]:
    """The uevents of the step just done, in SEQNUM order.

    A synthetic "change" of the sentinel marks the end: the kernel numbers it after
    everything the step caused, so every earlier event is in by the time it arrives.
    """
    sentinel = host.resolve(f"{PCI}/devices/{SENTINEL}")
    assert sentinel is not None, f"the sentinel {SENTINEL} is missing"
    marker = sentinel.removeprefix("/sys")
    host.write_attr(dev(SENTINEL, "uevent"), "change")
    seen: list[UEvent] = []
    deadline = time.monotonic() + EVENT_TIMEOUT
    while not any(e.action == "change" and e.devpath == marker for e in seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the sentinel's uevent did not come within {EVENT_TIMEOUT} s")
        if select.select([source], [], [], min(left, 0.5))[0]:
            seen += source.receive()
    seen.sort(key=lambda e: int(e.properties.get("SEQNUM", "0")))
    end = next(i for i, e in enumerate(seen) if e.action == "change" and e.devpath == marker)
    return tuple(summarize(e) for e in seen[:end] if e.subsystem in SUBSYSTEMS)


def summarize(event: UEvent) -> Event:
    """The parts of a uevent a step is judged by."""
    p = event.properties
    return Event(event.action, event.subsystem, event.devpath, p.get("PCI_SLOT_NAME"),
                 p.get("DRIVER"), p.get("DEVNAME"), tuple(sorted(STANDARD_KEYS & set(p))))


# -- traces as data ---------------------------------------------------------------------
def to_json(trace: list[Observation]) -> str:
    """A trace as JSON (what REAL_TRACE holds)."""
    return json.dumps([asdict(o) for o in trace], indent=1) + "\n"


def from_json(text: str) -> list[Observation]:
    """A trace read back from to_json's output."""
    def event(e: dict[str, Any]) -> Event:
        return Event(**{**e, "keys": tuple(e["keys"])})

    return [Observation(**{**o, "functions": tuple(Function(**f) for f in o["functions"]),
                           "dev_vfio": tuple(o["dev_vfio"]),
                           "events": tuple(event(e) for e in o["events"])})
            for o in json.loads(text)]


def differences(expected: list[Observation], got: list[Observation],
                names: tuple[str, str] = ("real", "sim")) -> list[str]:
    """Every way *got* differs from *expected*, one line each, naming the step."""
    out: list[str] = []
    if len(expected) != len(got):
        out.append(f"{len(expected)} steps in {names[0]}, {len(got)} in {names[1]}")
    for n, (a, b) in enumerate(zip(expected, got)):
        where = f"step {n} ({a.step!r}, {shown(a.value)} to {a.path or '-'})"
        if (a.step, a.path, a.value) != (b.step, b.path, b.value):
            out.append(f"{where}: {names[1]} ran another step, {b.step!r}")
            continue
        if a.errno != b.errno:
            out.append(f"{where}: errno {name(a.errno)} in {names[0]}, "
                       f"{name(b.errno)} in {names[1]}")
        for fa, fb in zip(a.functions, b.functions):
            if fa != fb:
                out.append(f"{where}: {fa.address} is {fa} in {names[0]}, {fb} in {names[1]}")
        if a.dev_vfio != b.dev_vfio:
            out.append(f"{where}: /dev/vfio holds {list(a.dev_vfio)} in {names[0]}, "
                       f"{list(b.dev_vfio)} in {names[1]}")
        if a.events != b.events:
            out.append(f"{where}: uevents differ\n  {names[0]}: "
                       + "\n  ".join(map(str, a.events)) + f"\n  {names[1]}: "
                       + "\n  ".join(map(str, b.events)))
    return out


def unexpected_errnos(trace: list[Observation]) -> list[str]:
    """Steps whose errno is not the one kernel-facts.md gives."""
    wanted = {s.label: s.errno for s in STEPS}
    return [f"{o.step!r}: {name(o.errno)}, expected {name(wanted[o.step])}"
            for o in trace[1:] if o.errno != wanted[o.step]]


def name(code: int) -> str:
    """ENODEV for 19, "0" for success."""
    return errno.errorcode.get(code, str(code)) if code else "0"


def shown(value: str) -> str:
    """A written value, short enough for a message."""
    return repr(value if len(value) <= 24 else value[:12] + f"...({len(value)} bytes)")
