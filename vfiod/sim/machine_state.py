"""What the simulated kernel remembers, and how it survives the process that ran it.

After every change the kernel writes ``ROOT/.sim-state.json`` atomically (temporary
file, rename): a SimHost killed with SIGKILL leaves the last consistent state,
and a new SimHost on the same root reads it back instead of rebuilding the machine.
Device states are stored as differences from the state the machine booted in (which
the profile determines), so the file stays small on the scale profile.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfiod.atomicfile import atomic_write

STATE_FILE = ".sim-state.json"
STATE_VERSION = 1


@dataclass
class DeviceState:
    """The kernel's changing view of one PCI function."""

    present: bool = True  # in the kernel's device list (``remove`` clears it)
    plugged: bool = True  # physically in its slot (a surprise removal clears it)
    driver: str | None = None
    override: str | None = None  # driver_override; None reads "(null)"
    dead: bool = False  # config space reads all ones
    enabled: bool = False
    reset_selected: list[str] | None = None  # None: every method the device has
    reset_files: bool = True  # reset and reset_method exist (a method probed when added)
    group: int | None = None  # its IOMMU group now (the profile's at boot)
    outcomes: dict[str, str] = field(default_factory=dict)  # method -> ok/enotty/dies
    vfio_index: int | None = None  # N of vfio-dev/vfioN while on vfio-pci
    releasing: bool = False  # an unbind is waiting for the device fd to be closed
    used: bool = False  # a guest has used it since its last device-specific reset or rescan
    broken: bool = False  # a "never_back" card after its fatal reset (kept across rescans)

    def delta(self, base: DeviceState) -> dict[str, Any]:
        """The fields that differ from *base* (the device as the machine booted)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(base, f.name)}

    def with_delta(self, delta: dict[str, Any]) -> DeviceState:
        """A copy of this state with *delta* applied; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(copy.deepcopy(self),
                                   **{k: v for k, v in delta.items() if k in names})


@dataclass
class MachineState:
    """Everything the kernel model needs to resume: devices, modules, dynamic ids."""

    profile: str
    devices: dict[str, dict[str, Any]]  # address -> DeviceState.delta() from boot
    modules: list[str]  # loaded modules in load order (built-ins not listed)
    dynids: dict[str, list[list[int]]]  # driver -> [vendor, device, subv, subd, class, mask]
    vtcon: dict[str, int]
    seqnum: int = 0
    #: /proc/sys/kernel/random/boot_id: drawn when the machine boots, kept while it runs
    #: (a SimHost that re-attaches finds the same boot; ``reboot`` makes a new one).
    boot_id: str = ""
    #: /sys/bus/pci/drivers_autoprobe: 0 while nothing may probe new devices by itself.
    autoprobe: int = 1

    def to_json(self) -> str:
        """Serialize, leaving out devices that are as they booted."""
        return json.dumps({
            "version": STATE_VERSION,
            "profile": self.profile,
            "devices": {a: d for a, d in self.devices.items() if d},
            "modules": self.modules,
            "dynids": self.dynids,
            "vtcon": self.vtcon,
            "seqnum": self.seqnum,
            "boot_id": self.boot_id,
            "autoprobe": self.autoprobe,
        }, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MachineState:
        """Parse what ``to_json`` wrote; raises ValueError for anything else."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a simulated machine state of this version")
        return cls(
            profile=str(data["profile"]),
            devices={str(a): dict(d) for a, d in data["devices"].items()},
            modules=list(data["modules"]),
            dynids={k: [list(map(int, i)) for i in v] for k, v in data["dynids"].items()},
            vtcon={k: int(v) for k, v in data["vtcon"].items()},
            seqnum=int(data.get("seqnum", 0)),
            boot_id=str(data.get("boot_id", "")),
            autoprobe=int(data.get("autoprobe", 1)),
        )


def state_path(root: Path) -> Path:
    """Where a machine's state lives under its root."""
    return root / STATE_FILE


def save(root: Path, text: str) -> None:
    """Replace the state file atomically (a reader sees the old or the new one)."""
    path = state_path(root)
    # Not durable: the state must survive the process being killed, not the machine
    # crashing, and the page cache outlives a killed process.
    atomic_write(path, text, 0o644, durable=False)


def load(root: Path) -> MachineState | None:
    """The saved state, or None when *root* holds no simulated machine."""
    try:
        text = state_path(root).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return MachineState.from_json(text)
