"""The engine's kernel writes: one control-file write with the engine's timeout."""

from __future__ import annotations

from vfiod.engine import progress
from vfiod.host import paths
from vfiod.host.base import Host


class Writer:
    """Writes the kernel's control files for the engine, and reads back a function's driver."""

    def __init__(self, host: Host, timeout: float) -> None:
        self.host = host
        self.timeout = timeout

    def write(self, path: str, value: str, device: str) -> None:
        """One write of *value* to a control file, on behalf of *device* (reported as
        what the operation waits for while it is in the kernel)."""
        with progress.kernel_write(f"writing {value.strip() or repr(value)} to {path}"):
            self.host.write_attr(path, value, timeout=self.timeout, device=device)

    def driver(self, address: str) -> str | None:
        """The driver a function is bound to now (its ``driver`` link), or None."""
        return self.host.link_name(paths.device_file(address, "driver"))
