"""Device records on the client side, built from org.vfiod1.Device properties.

``DeviceProperties`` has exactly the fields of vfiod.records.DeviceStatus (the record the
daemon builds its properties from) without importing pydantic: vfioctl must start fast.
A test keeps the two field lists equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vfiod.model import is_bridge_class
from vfiod.printable import printable

#: org.vfiod1.Device property -> DeviceProperties field (DESIGN.md's list, in its order).
PROPERTY_FIELDS: dict[str, str] = {
    "Address": "address",
    "VendorId": "vendor_id",
    "DeviceId": "device_id",
    "Name": "name",
    "Class": "class_code",
    "Driver": "driver",
    "HostDriver": "host_driver",
    "State": "state",
    "IommuGroup": "iommu_group",
    "Holder": "holder",
    "HolderPid": "holder_pid",
    "ResetMethods": "reset_methods",
    "Healthy": "healthy",
    "BootVga": "boot_vga",
    # Not in DESIGN.md's list: used when the daemon exports them, derived otherwise.
    "IsBridge": "is_bridge",
    "Error": "error",
    "UsedBy": "used_by",
    # The health record (DESIGN.md "Additions").
    "ResetCount": "reset_count",
    "LastResetMethod": "last_reset_method",
    "LastResetOutcome": "last_reset_outcome",
    "LastResetTime": "last_reset_time",
    "LastResetRungs": "last_reset_rungs",
    "ConsecutiveResetFailures": "consecutive_reset_failures",
    "GuestRuns": "guest_runs",
    "Quarantined": "quarantined",
    "QuarantineReason": "quarantine_reason",
    "Releasing": "releasing",
}

@dataclass
class DeviceProperties:
    """vfioctl's copy of one org.vfiod1.Device object (the fields of DeviceStatus)."""

    address: str
    vendor_id: int = 0
    device_id: int = 0
    name: str = ""
    class_code: int = 0
    driver: str = ""
    host_driver: str = ""
    state: str = ""
    iommu_group: int = -1
    holder: str = ""
    holder_pid: int = 0
    reset_methods: list[str] = field(default_factory=list)
    healthy: bool = True
    boot_vga: bool = False
    is_bridge: bool = False
    error: str = ""
    used_by: str = ""  # what the host uses it for ("/dev/sda2 is mounted on / (ext4)")
    reset_count: int = 0
    last_reset_method: str = ""
    last_reset_outcome: str = ""  # "healthy", "failed", "" before the first reset
    last_reset_time: int = 0  # µs since the epoch
    last_reset_rungs: int = 0
    consecutive_reset_failures: int = 0
    #: (start µs, end µs or 0, how it ended), oldest first.
    guest_runs: list[tuple[int, int, str]] = field(default_factory=list)
    quarantined: bool = False
    quarantine_reason: str = ""
    releasing: bool = False  # a forced Bind waits for the desktop to let go of it
    #: Properties the daemon exports beyond the known ones (shown in detail views).
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ids(self) -> str:
        """``10de:1b06``."""
        return f"{self.vendor_id:04x}:{self.device_id:04x}"

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> DeviceProperties:
        """Build from a Device object's properties (values already unwrapped)."""
        info = cls(address=printable(str(props.get("Address", ""))))
        info.update(props)
        if "IsBridge" not in props:
            info.is_bridge = is_bridge_class(info.class_code)
        return info

    @classmethod
    def from_status_row(cls, row: tuple[Any, ...]) -> DeviceProperties:
        """Build from a Manager.Status() row (address, ids, name, driver, state, group,
        holder): the fields a row carries, the rest left at their defaults."""
        address, ids, name, driver, state, group, holder = row
        vendor, _, device = str(ids).partition(":")
        return cls(address=printable(address), vendor_id=_hex(vendor),
                   device_id=_hex(device), name=printable(name), driver=printable(driver),
                   state=printable(state), iommu_group=int(group), holder=printable(holder))

    def update(self, props: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """Apply changed properties; returns (field, old, new) for values that changed."""
        changes: list[tuple[str, Any, Any]] = []
        for prop, value in props.items():
            value = safe_value(value)  # whatever the daemon (or a spoofer) sent
            name = PROPERTY_FIELDS.get(prop)
            if name is None:
                prop = printable(prop)
                if self.extra.get(prop) != value:
                    changes.append((prop, self.extra.get(prop), value))
                self.extra[prop] = value
                continue
            if not _of_type(value, FIELD_TYPES[name]):
                continue  # not what vfiod sends for it: keep what was known
            if name == "reset_methods":
                value = list(value)
            elif name == "guest_runs":
                value = [tuple(run) for run in value]
            old = getattr(self, name)
            if old != value:
                setattr(self, name, value)
                changes.append((name, old, value))
            if name == "class_code" and "IsBridge" not in props:
                self.is_bridge = is_bridge_class(self.class_code)
        return changes

    def to_json(self) -> dict[str, Any]:
        """The DeviceStatus fields as a JSON-ready dict (``extra`` left out)."""
        data = asdict(self)
        del data["extra"]
        return data


#: The Python type of each field's values (a D-Bus property of another type is ignored).
FIELD_TYPES: dict[str, type] = {
    f.name: (list if f.name == "reset_methods" else tuple if f.name == "guest_runs"
             else str if f.name == "address" else type(f.default))
    for f in fields(DeviceProperties) if f.name != "extra"}


def _of_type(value: Any, kind: type) -> bool:
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind is tuple:  # guest runs: a(tts)
        return isinstance(value, list) and all(
            isinstance(v, (list, tuple)) and len(v) == 3 and type(v[0]) is int
            and type(v[1]) is int and isinstance(v[2], str) for v in value)
    return type(value) is kind  # noqa: E721 (a bool is no int here, nor an int a bool)


#: DeviceProperties's record fields, in order (what ``status --json`` prints per device).
JSON_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DeviceProperties) if f.name != "extra")


def safe_value(value: Any) -> Any:
    """*value* with every string in it made printable (lists and dicts walked)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [safe_value(v) for v in value]
    if isinstance(value, dict):
        return {safe_value(k): safe_value(v) for k, v in value.items()}
    return value


def _hex(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        return 0


def unwrap(value: Any) -> Any:
    """A D-Bus value with every Variant replaced by its value (recursively)."""
    # Duck-typed (dbus_fast.Variant has both) so that formatting needs no dbus_fast.
    if hasattr(value, "signature") and hasattr(value, "value"):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value
