"""How vfioctl shows devices and changes: aligned tables for people, JSON for scripts.

Pure functions of DeviceProperties records: no D-Bus, no I/O, so the unit tests check the
exact text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vfiod.ctl.devices import DeviceProperties
from vfiod.utctime import utc_time

VFIO = "vfio-pci"
NONE = "-"
ELLIPSIS = "…"

_COLUMNS = ("ADDRESS", "NAME", "DRIVER", "STATE", "HOLDER", "NOTES")
_GAP = "  "
_INDENT = "  "


def notes_of(dev: DeviceProperties) -> str:
    """What a user should notice about a device: a bridge, the boot VGA, what the host
    needs it for, trouble."""
    notes = []
    if dev.is_bridge:
        notes.append("bridge")
    if dev.boot_vga:
        notes.append("boot VGA")
    if dev.used_by:
        notes.append(f"host: {dev.used_by}")
    if dev.releasing:
        notes.append("being released by the desktop")
    if not dev.healthy:
        notes.append("unhealthy")
    if dev.quarantined:
        notes.append("quarantined (vfioctl reset --clear)")
    if dev.error:
        notes.append(dev.error)
    return ", ".join(notes)


def group_key(dev: DeviceProperties) -> tuple[int, int]:
    """Sort key: groups in numeric order, devices without a group last."""
    return (1, 0) if dev.iommu_group < 0 else (0, dev.iommu_group)


def group_header(group: int, members: Sequence[DeviceProperties]) -> str:
    """``IOMMU group 31`` and, when it matters, what its endpoints' drivers mean."""
    if group < 0:
        return "no IOMMU group (cannot be passed through)"
    endpoints = [d for d in members if not d.is_bridge]
    on_vfio = sum(1 for d in endpoints if d.driver == VFIO)
    title = f"IOMMU group {group}"
    if endpoints and on_vfio == len(endpoints):
        held = any(d.holder for d in endpoints)
        return f"{title}: in a guest" if held else f"{title}: ready for a guest"
    if on_vfio:
        return f"{title}: partly on vfio-pci ({on_vfio} of {len(endpoints)} endpoints), " \
               "not usable by a guest"
    return title


def _clip(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: width - 1] + ELLIPSIS if width > 0 else ""


def fit(line: str, width: int | None) -> str:
    """*line* ellipsized to *width* columns (None: whole)."""
    return line if width is None else _clip(line, width)


#: The columns shortened, widest first, when the table is too wide: NAME, HOLDER, NOTES;
#: and how narrow each may get. ADDRESS, DRIVER and STATE stay whole.
_SHRINKABLE = {1: 12, 4: 10, 5: 10}


def _fit_widths(widths: list[int], width: int) -> list[int]:
    """Column widths whose table line is at most *width*, shrinking the widest
    shortenable column one step at a time (so names, holders and notes keep their
    share)."""
    widths = list(widths)
    excess = len(_INDENT) + sum(widths) + len(_GAP) * (len(widths) - 1) - width
    while excess > 0:
        candidates = [i for i, least in _SHRINKABLE.items() if widths[i] > least]
        if not candidates:
            break  # a very narrow terminal: each line is cut at its end instead
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def status_table(devices: Iterable[DeviceProperties], width: int | None = None) -> str:
    """Every device in an aligned table under one header per IOMMU group.

    *width*: the terminal's width; no line is longer, names, holders and notes are
    ellipsized with "…" to fit, as systemctl and lspci do (None: everything whole).
    """
    devs = sorted(devices, key=lambda d: (group_key(d), d.address))
    if not devs:
        return fit("vfiod reports no PCI devices", width) + "\n"
    rows = [(d.address, d.name or d.ids, d.driver or NONE, d.state or NONE,
             d.holder or NONE, notes_of(d)) for d in devs]
    widths = [max(len(_COLUMNS[i]), *(len(r[i]) for r in rows)) for i in range(6)]
    if width is not None:
        widths = _fit_widths(widths, width)

    def line(cells: Sequence[str]) -> str:
        parts = [_clip(c, widths[i]).ljust(widths[i]) for i, c in enumerate(cells)]
        return fit((_INDENT + _GAP.join(parts)).rstrip(), width)

    out = [line(_COLUMNS)]
    current: int | None = None
    for dev, row in zip(devs, rows):
        group = dev.iommu_group if dev.iommu_group >= 0 else -1
        if group != current:
            current = group
            members = [d for d in devs if (d.iommu_group if d.iommu_group >= 0 else -1)
                       == group]
            out.append(fit(group_header(group, members), width))
        out.append(line(row))
    return "\n".join(out) + "\n"


def summary_line(devices: Sequence[DeviceProperties]) -> str:
    """``14 devices: 2 on vfio-pci (1 in a guest), 1 unbound, 0 in error``."""
    on_vfio = sum(1 for d in devices if d.driver == VFIO)
    guest = sum(1 for d in devices if d.state == "guest")
    unbound = sum(1 for d in devices if not d.driver)
    errors = sum(1 for d in devices if d.state == "error" or not d.healthy)
    text = f"{len(devices)} devices: {on_vfio} on vfio-pci"
    if guest:
        text += f" ({guest} in a guest)"
    text += f", {unbound} without a driver"
    if errors:
        text += f", {errors} in error"
    return text


_DETAIL_LABELS: tuple[tuple[str, str], ...] = (
    ("ids", "ids"),
    ("class_code", "class"),
    ("driver", "driver"),
    ("host_driver", "host driver"),
    ("state", "state"),
    ("iommu_group", "IOMMU group"),
    ("holder", "holder"),
    ("holder_pid", "holder pid"),
    ("reset_methods", "reset methods"),
    ("healthy", "healthy"),
    ("boot_vga", "boot VGA"),
    ("is_bridge", "bridge"),
    ("error", "error"),
)


def _property_label(prop: str) -> str:
    """A D-Bus property name a person can read, in the other labels' case:
    ``ConfigName`` -> ``config name``; an all-capitals word (``VGA``) stays."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", prop)
    if not words:
        return prop
    return " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)


def _shown(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "class_code":
        return f"0x{value:06x}"
    if name == "iommu_group" and value < 0:
        return "none"
    if name == "holder_pid" and not value:
        return NONE
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) if value else "none"
    if value == "" or value is None:
        return NONE
    return str(value)


def device_detail(dev: DeviceProperties, group: Sequence[DeviceProperties] = ()) -> str:
    """Every property of one device, one per line, then its IOMMU group's members."""
    lines = [f"{dev.address}  {dev.name or dev.ids}"]
    pairs = [(label, _shown(name, dev.ids if name == "ids" else getattr(dev, name)))
             for name, label in _DETAIL_LABELS]
    pairs += [(_property_label(prop), _shown(prop, value))
              for prop, value in sorted(dev.extra.items())]
    pairs += record_pairs(dev)
    width = max(len(label) for label, _ in pairs)
    lines += [f"{_INDENT}{label.ljust(width)}  {value}" for label, value in pairs]
    others = [d for d in group if d.address != dev.address]
    if others:
        lines.append(f"{_INDENT}{'group peers'.ljust(width)}  "
                     + ", ".join(f"{d.address} ({d.driver or 'no driver'})" for d in others))
    return "\n".join(lines) + "\n"


def record_pairs(dev: DeviceProperties) -> list[tuple[str, str]]:
    """The health record as (label, value) lines: resets, the last one, failures in a
    row, quarantine, then each guest run (newest first)."""
    if dev.reset_count:
        rungs = f", {dev.last_reset_rungs} rung(s)" if dev.last_reset_rungs else ""
        how = f"{dev.last_reset_method or 'no method'}, {dev.last_reset_outcome}{rungs}"
        last = f"{utc_time(dev.last_reset_time)}: {how}"
    else:
        last = NONE
    pairs = [("resets", str(dev.reset_count)), ("last reset", last),
             ("failed in a row", str(dev.consecutive_reset_failures)),
             ("quarantined", f"yes: {dev.quarantine_reason}" if dev.quarantined else "no"),
             ("guest runs", str(len(dev.guest_runs)) if dev.guest_runs else "none")]
    for start, end, how in reversed(dev.guest_runs):
        until = utc_time(end) if end else "now"
        pairs.append(("", f"{utc_time(start)} - {until}: {how}"))
    return pairs


def to_json(value: Any) -> str:
    """One line of JSON (monitor's events)."""
    return json.dumps(value, ensure_ascii=False)


def status_json(devices: Iterable[DeviceProperties]) -> str:
    """A JSON list of DeviceStatus-shaped objects, sorted by address."""
    return json.dumps([d.to_json() for d in sorted(devices, key=lambda d: d.address)],
                      indent=2, ensure_ascii=False) + "\n"


def device_json(dev: DeviceProperties) -> str:
    """One DeviceStatus-shaped object."""
    return json.dumps(dev.to_json(), indent=2, ensure_ascii=False) + "\n"


def moved_lines(addresses: Sequence[str], before: Mapping[str, DeviceProperties],
                after: Mapping[str, DeviceProperties], width: int | None = None) -> list[str]:
    """``0000:06:00.0  NVIDIA ... [GeForce GTX 1080 Ti]  nvidia -> vfio-pci``, aligned.

    *width*: the terminal's; names are ellipsized so that each line fits (None: whole).
    """
    if not addresses:
        return []
    names = {a: (after.get(a) or before.get(a) or DeviceProperties(a)).name for a in addresses}
    moves = {}
    for a in addresses:
        old = before.get(a)
        new = after.get(a)
        was = (old.driver or "no driver") if old is not None else "?"
        now = (new.driver or "no driver") if new is not None else "?"
        moves[a] = f"{was} -> {now}"
    name_width = max(len(n) for n in names.values())
    if width is not None:
        rest = max(len(a) + len(m) for a, m in moves.items()) + 2 * len(_GAP)
        name_width = max(min(name_width, width - rest), 12)
    return [fit(f"{a}  {_clip(names[a], name_width).ljust(name_width)}  {moves[a]}".rstrip(),
                width) for a in addresses]


def monitor_line(time_text: str, address: str, name: str,
                 changes: Sequence[tuple[str, Any, Any]]) -> str:
    """One text line for a change of one device: ``12:00:01  0000:06:00.0  NAME  driver
    nvidia -> vfio-pci, state host -> vfio``."""
    parts = [f"{_label(field)} {_shown(field, old) if old is not None else '?'} -> "
             f"{_shown(field, new)}" for field, old, new in changes]
    who = f"{address}  {name}" if name else address
    return f"{time_text}  {who}  " + ", ".join(parts)


def _label(field: str) -> str:
    for name, label in _DETAIL_LABELS:
        if name == field:
            return label
    return field
