"""The config file /etc/vfiod/vfiod.toml: parsing, validation and device matching.

A file is an array of ``[[device]]`` tables (DESIGN.md). A bad file is refused as a
whole with a :class:`ConfigError` whose message points at the file, the line and the
field at fault (``vfiod.toml:7: device[1].boot: ...``); indices count ``[[device]]``
tables from 0, as in the array they make. An empty or absent file is a valid, empty
config. What only the machine can tell (which functions share an IOMMU group) is
checked against it by ``check_boot_groups``, with the same file:line errors.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from vfiod.address import is_name, normalize_address, parse_ids
from vfiod.contract import DEFAULT_CONFIG_PATH
from vfiod.errors import InvalidArgument, NoSuchDevice
from vfiod.model import PciDevice


DEVICE_KEYS = ("match", "name", "boot", "on_release")
#: The keys of the ``[daemon]`` table.
DAEMON_KEYS = ("quarantine_after",)
#: Failed resets in a row after which a device is quarantined (0: never).
DEFAULT_QUARANTINE_AFTER = 3
MAX_QUARANTINE_AFTER = 1000

#: A config file larger than this is refused unread (a real one is a few hundred bytes;
#: ``--config /dev/zero`` or a runaway file must not eat the daemon's memory).
MAX_CONFIG_BYTES = 1 << 20
#: Arrays and inline tables nested deeper than this are refused before parsing:
#: tomllib recurses once per level (RecursionError at about 1,000); a real file has 2.
MAX_NESTING = 32

#: Seconds a forced bind waits for the desktop to let go of a GPU (``[handover] timeout``),
#: by default and at most.
DEFAULT_HANDOVER_TIMEOUT = 10.0
MAX_HANDOVER_TIMEOUT = 120.0
HANDOVER_KEYS = ("timeout",)

Boot = Literal["vfio", "host"]
OnRelease = Literal["keep", "reset", "host"]


class ConfigError(InvalidArgument):
    """The config file is unreadable or invalid; the message says where and why.

    An InvalidArgument, so that a refused reload reaches D-Bus clients as
    ``org.vfiod1.Error.InvalidArgument``.
    """

    def __init__(self, filename: str, line: int | None, field: str | None, reason: str) -> None:
        self.filename = filename
        self.line = line
        self.field = field
        self.reason = reason
        where = f"{filename}:{line}" if line is not None else filename
        what = f"{field}: " if field else ""
        super().__init__(f"{where}: {what}{reason}")


class DeviceEntry(BaseModel):
    """One ``[[device]]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Normalised: ``0000:06:00.0``, ``10de:1b06`` or ``10de:1b06@0000:06:00.0``.
    match: str
    name: str | None = None
    boot: Boot = "host"
    on_release: OnRelease = "keep"

    @field_validator("match", mode="before")
    @classmethod
    def _check_match(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        normalized = normalize_match(value)
        if normalized is None:
            raise ValueError(
                f"{value[:40]!r} is not a PCI address (0000:06:00.0 or 06:00.0), "
                "vendor:device ids (10de:1b06) or both (10de:1b06@0000:06:00.0)")
        return normalized

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if normalize_address(value) is not None or parse_ids(value) is not None:
            raise ValueError(f"{value!r} looks like an address or ids; a name must not")
        if not is_name(value):
            raise ValueError(
                f"{value[:40]!r} is not a valid name: a letter, then up to 63 letters, "
                "digits, '_' or '-'")
        return value

    @property
    def address(self) -> str | None:
        """The full PCI address this entry names, or None for an ids-only match."""
        _, _, address = self.match.rpartition("@")
        return address if normalize_address(address) == address else None

    @property
    def ids(self) -> tuple[int, int] | None:
        """(vendor, device) this entry requires, or None for an address-only match."""
        ids, _, _ = self.match.partition("@")
        return parse_ids(ids)

    @property
    def label(self) -> str:
        """How messages name the entry: its name, else its match."""
        return self.name or self.match

    @property
    def boot_given(self) -> bool:
        """True when the file says ``boot`` for this entry (an entry without it follows
        its IOMMU group; ``boot = "host"`` written out is a wish that can conflict)."""
        return "boot" in self.model_fields_set

    def matches(self, dev: PciDevice) -> bool:
        """True when *dev* is the device this entry describes."""
        return self.matches_function(dev.address, dev.vendor, dev.device)

    def matches_function(self, address: str, vendor: int, device: int) -> bool:
        """True when the function at *address* with these ids is the one described."""
        want_address, ids = self.address, self.ids
        if want_address is not None and address != want_address:
            return False
        if ids is not None and (vendor, device) != ids:
            return False
        return True


def normalize_match(text: str) -> str | None:
    """The canonical form of a ``match`` value, or None when it is malformed."""
    text = text.strip().lower()
    ids_part, sep, address_part = text.partition("@")
    if sep:
        ids = parse_ids(ids_part)
        address = normalize_address(address_part)
        if ids is None or address is None:
            return None
        return f"{ids[0]:04x}:{ids[1]:04x}@{address}"
    address = normalize_address(text)
    if address is not None:
        return address
    ids = parse_ids(text)
    return f"{ids[0]:04x}:{ids[1]:04x}" if ids is not None else None


class Config(BaseModel):
    """A whole config file; ``devices`` keeps the file's order."""

    model_config = ConfigDict(frozen=True)

    devices: list[DeviceEntry] = []
    #: The file it came from ("" when built in code).
    path: str = ""
    #: Where each entry is in the file, as devices: {"": its [[device]] line, key: the
    #: line of that key}; empty when built in code. For errors found later, against the
    #: machine (check_boot_groups).
    lines: tuple[dict[str, int], ...] = ()
    #: ``[daemon] quarantine_after``: failed resets in a row after which Bind refuses a
    #: device until the user clears it (0: never).
    quarantine_after: int = DEFAULT_QUARANTINE_AFTER
    #: ``[handover] timeout``: seconds a forced bind of a GPU the desktop holds waits
    #: for it to let go (after the card's ``remove`` uevent).
    handover_timeout: float = DEFAULT_HANDOVER_TIMEOUT

    def line_of(self, index: int, key: str = "") -> int | None:
        """The line of entry *index*'s *key* (its table's line without one), or None."""
        if index >= len(self.lines):
            return None
        found = self.lines[index]
        return found.get(key, found.get(""))

    def index_of(self, entry: DeviceEntry) -> int:
        """The position of *entry* (one of this config's own) in the file."""
        return next(i for i, e in enumerate(self.devices) if e is entry)

    @staticmethod
    def match(entry: DeviceEntry, dev: PciDevice) -> bool:
        """True when *entry* describes *dev* (its address and/or ids agree)."""
        return entry.matches(dev)

    def entry_for(self, dev: PciDevice) -> DeviceEntry | None:
        """The entry describing *dev*: an address match wins over an ids-only match."""
        by_ids: DeviceEntry | None = None
        for entry in self.devices:
            if not entry.matches(dev):
                continue
            if entry.address is not None:
                return entry
            if by_ids is None:
                by_ids = entry
        return by_ids

    def entry_named(self, name: str) -> DeviceEntry | None:
        """The entry with this name, or None."""
        for entry in self.devices:
            if entry.name == name:
                return entry
        return None

    def devices_for(self, entry: DeviceEntry, devices: Iterable[PciDevice]) -> list[PciDevice]:
        """Every device in *devices* that *entry* matches, in address order."""
        return sorted((d for d in devices if entry.matches(d)), key=lambda d: d.address)

    def boot_entries(self) -> list[DeviceEntry]:
        """The entries the early-boot shim claims (``boot = "vfio"``)."""
        return [e for e in self.devices if e.boot == "vfio"]


# -- loading ---------------------------------------------------------------------------

def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> Config:
    """Read and validate a config file; an absent file is an empty config.

    Only a regular file of at most MAX_CONFIG_BYTES is read: it is opened without
    blocking (a FIFO with no writer would hang a plain open) and checked with fstat
    before any read. Raises ConfigError (file, line, field and reason) for anything
    else that is wrong.
    """
    filename = str(path)
    raw = _read_regular_file(filename)
    if raw is None:
        return Config(path=filename)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(filename, line, None, "not valid UTF-8") from None
    return parse_config(text, filename)


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _read_regular_file(filename: str) -> bytes | None:
    """The bytes of a regular file of bounded size; None when it does not exist."""
    try:
        fd = os.open(filename, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(filename, None, None, f"cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)),
                        "not a regular file")
            raise ConfigError(filename, None, None,
                              f"is {kind}, not a regular file: refused unread")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(filename, None, None, _too_large(st.st_size))
        chunks: list[bytes] = []
        size = 0
        # Read to the end, not to st_size: the file may grow while it is read.
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(filename, None, None, _too_large(size))
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(filename, None, None, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _too_large(size: int) -> str:
    return (f"{size} bytes or more is too large for a config file "
            f"(at most {MAX_CONFIG_BYTES} bytes): refused unread")


def parse_config(text: str, filename: str = DEFAULT_CONFIG_PATH) -> Config:
    """Parse and validate config text; *filename* is only used in messages.

    Every failure, whatever the parser raised, is a ConfigError with the line when it
    can be told.
    """
    too_deep = _line_nested_too_deep(text)
    if too_deep is not None:
        raise ConfigError(filename, too_deep, None,
                          f"arrays or inline tables nested more than {MAX_NESTING} deep")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, filename, text) from None
    except (ValueError, RecursionError) as exc:
        # tomllib's own limits: an integer of more than 4,300 digits, nesting the
        # pre-check did not see (it does not parse strings exactly).
        raise ConfigError(filename, _line_of_long_number(text), None,
                          f"TOML syntax: {str(exc)[:200] or type(exc).__name__}") from None
    locator = _Locator(text)

    for key in data:
        if key not in ("device", "daemon", "handover"):
            raise ConfigError(filename, locator.top_level_key(key), key,
                              "unknown key (the file holds [daemon], [handover] and "
                              "[[device]] tables only)")
    daemon = _daemon_settings(data.get("daemon", {}), filename, locator)
    handover_timeout = _handover_timeout(data.get("handover", {}), filename, locator)
    tables = data.get("device", [])
    if not isinstance(tables, list):
        raise ConfigError(filename, locator.top_level_key("device"), "device",
                          "must be an array of tables: write each device as [[device]]")

    entries: list[DeviceEntry] = []
    for index, table in enumerate(tables):
        where = f"device[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(filename, locator.table(index), where, "must be a table")
        entries.append(_validate_entry(table, index, filename, locator))

    _check_unique(entries, filename, locator)
    lines = []
    for index, table in enumerate(tables):
        where = {key: line for key in table if (line := locator.key(index, key)) is not None}
        if (header := locator.table(index)) is not None:
            where[""] = header
        lines.append(where)
    return Config(devices=entries, path=filename, lines=tuple(lines),
                  handover_timeout=handover_timeout, **daemon)


def _daemon_settings(table: object, filename: str, locator: _Locator) -> dict[str, Any]:
    """The ``[daemon]`` table's settings, checked (ConfigError with its line)."""
    if not isinstance(table, dict):
        raise ConfigError(filename, locator.top_level_key("daemon"), "daemon",
                          "must be a table: write [daemon]")
    for key, value in table.items():
        line = locator.daemon_key(key)
        if key not in DAEMON_KEYS:
            raise ConfigError(filename, line, f"daemon.{key}",
                              f"unknown key (expected one of: {', '.join(DAEMON_KEYS)})")
        if type(value) is not int or not 0 <= value <= MAX_QUARANTINE_AFTER:
            raise ConfigError(filename, line, f"daemon.{key}",
                              f"must be a whole number from 0 (never) to "
                              f"{MAX_QUARANTINE_AFTER}, not {str(value)[:40]!r}")
    return dict(table)


def _handover_timeout(table: Any, filename: str, locator: _Locator) -> float:
    """The ``[handover]`` table's timeout in seconds (the default when absent)."""
    if not isinstance(table, dict):
        raise ConfigError(filename, locator.top_level_key("handover"), "handover",
                          "must be a table: write it as [handover]")
    for key in table:
        if key not in HANDOVER_KEYS:
            raise ConfigError(filename, locator.top_level_key("handover"), f"handover.{key}",
                              f"unknown key (expected one of: {', '.join(HANDOVER_KEYS)})")
    value = table.get("timeout", DEFAULT_HANDOVER_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= MAX_HANDOVER_TIMEOUT:
        raise ConfigError(filename, locator.top_level_key("handover"), "handover.timeout",
                          f"{value!r} is not a number of seconds from 0 to "
                          f"{MAX_HANDOVER_TIMEOUT:g}")
    return float(value)


def _line_nested_too_deep(text: str) -> int | None:
    """The 1-based line where ``[``/``{`` nesting first passes MAX_NESTING, or None.

    A cheap scan that skips comments and one-line strings; table headers (``[[x]]``)
    open and close on their line, so they never come near the limit.
    """
    depth = 0
    line = 1
    quote: str | None = None
    escaped = False
    comment = False
    for ch in text:
        if ch == "\n":
            line += 1
            comment = False
            if quote is not None and len(quote) == 1:
                quote = None  # a one-line string cannot span lines (tomllib says why)
            continue
        if comment:
            continue
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return line
        elif ch in "]}" and depth > 0:
            depth -= 1
    return None


def _line_of_long_number(text: str) -> int | None:
    m = re.search(r"\d{1000,}", text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _validate_entry(table: dict[str, Any], index: int, filename: str,
                    locator: _Locator) -> DeviceEntry:
    where = f"device[{index}]"
    for key in table:
        if key not in DEVICE_KEYS:
            raise ConfigError(filename, locator.key(index, key), f"{where}.{key}",
                              f"unknown key (expected one of: {', '.join(DEVICE_KEYS)})")
    if "match" not in table:
        raise ConfigError(filename, locator.table(index), f"{where}.match",
                          "missing: every device needs a match (an address or ids)")
    try:
        return DeviceEntry.model_validate(table)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = str(err["loc"][0]) if err["loc"] else "match"
        raise ConfigError(filename, locator.key(index, key), f"{where}.{key}",
                          _reason(err)) from None


def _reason(err: Any) -> str:
    """A short reason from a pydantic error, without pydantic's wording for ours."""
    kind = err.get("type", "")
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err.get('input')!r} is not allowed (expected {expected})"
    if kind in ("string_type",):
        return "must be a string"
    return str(err["msg"])


def _check_unique(entries: list[DeviceEntry], filename: str, locator: _Locator) -> None:
    names: dict[str, int] = {}
    matches: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.name is not None:
            if entry.name in names:
                raise ConfigError(filename, locator.key(index, "name"), f"device[{index}].name",
                                  f"{entry.name!r} is already the name of "
                                  f"device[{names[entry.name]}]; names must be unique")
            names[entry.name] = index
        if entry.match in matches:
            raise ConfigError(filename, locator.key(index, "match"), f"device[{index}].match",
                              f"{entry.match} is already matched by device[{matches[entry.match]}]")
        matches[entry.match] = index


# -- against the machine ----------------------------------------------------------------

@dataclass(frozen=True)
class BootConflict:
    """Two functions of one IOMMU group whose entries disagree on ``boot``.

    A group moves to vfio-pci as a whole (a partly claimed group is not viable), so
    ``boot = "vfio"`` on one member would take the other along against its
    ``boot = "host"``.
    """

    group: int
    vfio: tuple[int, DeviceEntry, PciDevice]  # (entry index, entry, function)
    host: tuple[int, DeviceEntry, PciDevice]

    def error(self, config: Config) -> ConfigError:
        """The config error, at the line of the ``boot = "host"`` that would be overruled."""
        vi, ventry, vdev = self.vfio
        hi, hentry, hdev = self.host
        vline = config.line_of(vi, "boot")
        vfio_side = [x for x in (ventry.name, vdev.address) if x]
        if vline is not None:
            vfio_side.append(f"line {vline}")
        host_side = f"{hentry.name} ({hdev.address})" if hentry.name else hdev.address
        return ConfigError(
            config.path or "the config", config.line_of(hi, "boot"), f"device[{hi}].boot",
            f"\"host\" for {host_side} conflicts with boot = \"vfio\" of device[{vi}] "
            f"({', '.join(vfio_side)}): they share IOMMU group {self.group}, which goes to "
            "vfio-pci as a whole; give both the same boot value")


def boot_conflicts(config: Config, devices: Iterable[PciDevice]) -> list[BootConflict]:
    """Every IOMMU group where one function's entry says ``boot = "vfio"`` and another's
    says ``boot = "host"`` (written out; an entry without ``boot`` follows its group),
    by group number; bridges stay with the host and never conflict."""
    wishes: dict[int, dict[str, list[tuple[int, DeviceEntry, PciDevice]]]] = {}
    for dev in sorted(devices, key=lambda d: d.address):
        entry = config.entry_for(dev)
        if entry is None or dev.iommu_group is None or dev.is_bridge or not entry.boot_given:
            continue
        wish = (config.index_of(entry), entry, dev)
        wishes.setdefault(dev.iommu_group, {}).setdefault(entry.boot, []).append(wish)
    return [BootConflict(group, by_boot["vfio"][0], by_boot["host"][0])
            for group, by_boot in sorted(wishes.items())
            if "vfio" in by_boot and "host" in by_boot]


def check_boot_groups(config: Config, devices: Iterable[PciDevice]) -> None:
    """Refuse a config whose ``boot`` values conflict inside an IOMMU group on this
    machine: ConfigError with the file and line of the first conflict."""
    conflicts = boot_conflicts(config, devices)
    if conflicts:
        raise conflicts[0].error(config)


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_error(exc: tomllib.TOMLDecodeError, filename: str, text: str) -> ConfigError:
    message = str(exc)
    if (m := _TOML_POSITION.search(message)) is not None:
        reason = message[: m.start()]
        return ConfigError(filename, int(m.group(1)), None,
                           f"TOML syntax: {reason} (column {m.group(2)})")
    if (m := _TOML_END.search(message)) is not None:
        return ConfigError(filename, max(1, len(text.splitlines())), None,
                           f"TOML syntax: {message[: m.start()]} (at the end of the file)")
    return ConfigError(filename, None, None, f"TOML syntax: {message}")


# -- finding lines ---------------------------------------------------------------------

_ARRAY_TABLE = re.compile(r"""^\s*\[\[\s*(?:device|"device"|'device')\s*\]\]\s*(?:#.*)?$""")
_ANY_TABLE = re.compile(r"^\s*\[")


class _Locator:
    """Finds the line of a [[device]] table or of a key in it (tomllib gives none).

    A line-oriented scan: good for files people write (one key per line), and it falls
    back to the table's line, or to no line, when it cannot tell.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.tables: list[int] = []  # 0-based line index of each [[device]] header
        self.first_table: int | None = None
        in_multiline: str | None = None
        for i, line in enumerate(self.lines):
            if in_multiline is not None:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_multiline = quote
            if in_multiline is not None:
                continue
            if _ANY_TABLE.match(line) and self.first_table is None:
                self.first_table = i
            if _ARRAY_TABLE.match(line):
                self.tables.append(i)

    def table(self, index: int) -> int | None:
        """1-based line of the index-th [[device]] header, or of a top-level device key."""
        if index < len(self.tables):
            return self.tables[index] + 1
        return self.top_level_key("device")

    def key(self, index: int, key: str) -> int | None:
        """1-based line of *key* inside the index-th [[device]] table."""
        if index >= len(self.tables):
            return self.table(index)
        start = self.tables[index]
        pattern = _key_pattern(key)
        for i in range(start + 1, len(self.lines)):
            line = self.lines[i]
            if _ANY_TABLE.match(line):
                break
            if pattern.match(line):
                return i + 1
        return start + 1

    def daemon_key(self, key: str) -> int | None:
        """1-based line of *key* in the ``[daemon]`` table (or of the table itself)."""
        header = self.top_level_key("daemon")
        if header is None:
            return None
        pattern = _key_pattern(key)
        for i in range(header, len(self.lines)):
            if _ANY_TABLE.match(self.lines[i]):
                break
            if pattern.match(self.lines[i]):
                return i + 1
        return header

    def top_level_key(self, key: str) -> int | None:
        """1-based line of a key before the first table header, or of a ``[key]`` table."""
        pattern = _key_pattern(key)
        end = self.first_table if self.first_table is not None else len(self.lines)
        for i in range(end):
            if pattern.match(self.lines[i]):
                return i + 1
        header = re.compile(rf"""^\s*\[\s*(?:{re.escape(key)}|"{re.escape(key)}")\s*[\].]""")
        for i, line in enumerate(self.lines):
            if header.match(line):
                return i + 1
        return None


def _key_pattern(key: str) -> re.Pattern[str]:
    quoted = re.escape(key)
    return re.compile(rf"""^\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*[=.]""")


def resolve_name(config: Config | None, name: str,
                 functions: Iterable[tuple[str, int, int]], *,
                 where: str = "the config file") -> str:
    """The address a config-file name stands for among *functions* (address, vendor,
    device): the daemon's and vfioctl's one rule.

    InvalidArgument for a name no entry has and for an entry that matches several
    functions; NoSuchDevice for one that matches none. *where* names the config file in
    the message.
    """
    entry = config.entry_named(name) if config is not None else None
    if entry is None:
        raise InvalidArgument(
            f"{name!r} is neither a PCI address (such as 0000:06:00.0) nor a device name "
            f"from {where}")
    matches = sorted(a for a, vendor, device in functions
                     if entry.matches_function(a, vendor, device))
    if not matches:
        raise NoSuchDevice(f"{name}: no PCI device matches {entry.match!r}")
    if len(matches) > 1:
        raise InvalidArgument(
            f"{name}: {entry.match!r} matches {len(matches)} devices "
            f"({', '.join(matches)}); match by address in the config file")
    return matches[0]
