"""State that must survive a daemon crash, kept as small JSON files written atomically.

- ``host-drivers.json``: the host driver each device had before vfiod bound it to
  vfio-pci, so that Unbind can return it even after a restart or a reboot.
- ``txn-<group>.json``: the transaction in progress on one IOMMU group: every member's
  driver and driver_override before it began. Written before the first step, so it is
  on disk before every step; removed when the transaction is done. A file found at
  start means a process died mid-way, and recovery puts every member back.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pydantic import BaseModel, TypeAdapter

from vfiod.atomicfile import atomic_write


class MemberRecord(BaseModel):
    """One device's place before a transaction touched it."""

    address: str
    driver: str | None
    driver_override: str | None


class Transaction(BaseModel):
    """An operation in progress on one IOMMU group."""

    key: str  # "group-31"
    operation: str  # "bind" | "unbind"
    members: list[MemberRecord]


_DRIVERS = TypeAdapter(dict[str, str])


class Journal:
    """The daemon's persistent state directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._drivers_path = self.dir / "host-drivers.json"
        self._drivers: dict[str, str] = self._load_drivers()

    def _load_drivers(self) -> dict[str, str]:
        try:
            return _DRIVERS.validate_json(self._drivers_path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            # A damaged file must not stop the daemon; it only loses preferences.
            return {}

    # -- host drivers -----------------------------------------------------------------
    def host_driver(self, address: str) -> str | None:
        """The driver *address* had before vfiod last bound it to vfio-pci."""
        with self._lock:
            return self._drivers.get(address)

    def remember_host_drivers(self, drivers: dict[str, str]) -> None:
        """Record where devices came from, before they leave (one atomic write)."""
        with self._lock:
            changed = {a: d for a, d in drivers.items() if self._drivers.get(a) != d}
            if not changed:
                return
            self._drivers.update(changed)
            atomic_write(self._drivers_path, json.dumps(self._drivers, indent=1, sort_keys=True))

    # -- transactions -----------------------------------------------------------------
    def _txn_path(self, key: str) -> Path:
        return self.dir / f"txn-{key}.json"

    def begin(self, txn: Transaction) -> None:
        """Persist a transaction before its first step."""
        atomic_write(self._txn_path(txn.key), txn.model_dump_json(indent=1))

    def end(self, key: str) -> None:
        """Forget a finished (or rolled back) transaction."""
        try:
            self._txn_path(key).unlink()
        except FileNotFoundError:
            pass

    def unfinished(self) -> list[Transaction]:
        """Transactions a killed process left behind."""
        out = []
        for path in sorted(self.dir.glob("txn-*.json")):
            try:
                out.append(Transaction.model_validate_json(path.read_bytes()))
            except ValueError:
                path.unlink(missing_ok=True)  # a torn write cannot happen; junk can
        return out
