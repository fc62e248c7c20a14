"""The errors vfiod reports, each with the D-Bus error name clients see.

Every failure that reaches a client is one of these: a one-line message that names
the device and the reason. Anything else is a bug and is reported as
``org.vfiod1.Error.Failed`` without a traceback.
"""

from __future__ import annotations

import errno as _errno
import os

ERROR_PREFIX = "org.vfiod1.Error."


class VfiodError(Exception):
    """Base of every error vfiod reports to a user."""

    dbus_name: str = ERROR_PREFIX + "Failed"
    #: vfioctl's exit code for this error (documented in the README).
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(VfiodError):
    """A malformed device argument or option; raised before any I/O."""

    dbus_name = ERROR_PREFIX + "InvalidArgument"
    exit_code = 2


class NoSuchDevice(VfiodError):
    """A well-formed address or name that matches no PCI function."""

    dbus_name = ERROR_PREFIX + "NoSuchDevice"
    exit_code = 3


class InUse(VfiodError):
    """The host (or a guest) uses the device; the message names what uses it."""

    dbus_name = ERROR_PREFIX + "InUse"
    exit_code = 4

    def __init__(self, message: str, *, hard: bool = False) -> None:
        super().__init__(message)
        #: True for guards that ``force`` never overrides.
        self.hard = hard


class GroupNotViable(VfiodError):
    """The IOMMU group cannot be used as asked (partial group, no group at all)."""

    dbus_name = ERROR_PREFIX + "GroupNotViable"
    exit_code = 5


class Timeout(VfiodError):
    """A sysfs write or a wait did not finish in time."""

    dbus_name = ERROR_PREFIX + "Timeout"
    exit_code = 6


class ResetFailed(VfiodError):
    """No reset method worked, or the device was unhealthy afterwards."""

    dbus_name = ERROR_PREFIX + "ResetFailed"
    exit_code = 7


class Quarantined(VfiodError):
    """The device failed its resets too often in a row: Bind refuses it until the user
    clears the quarantine (``vfioctl reset --clear``); the message carries its history."""

    dbus_name = ERROR_PREFIX + "Quarantined"
    exit_code = 10


class Failed(VfiodError):
    """Any other failure of an operation, with its reason."""

    dbus_name = ERROR_PREFIX + "Failed"
    exit_code = 1


class AccessDenied(VfiodError):
    """The caller may not do this (polkit said no, or not root without polkit)."""

    dbus_name = "org.freedesktop.DBus.Error.AccessDenied"
    exit_code = 8


class HostWriteError(Failed):
    """A write to a kernel control file failed with an errno.

    Carries the errno so that the engine can decide what it means, and a message
    that names the file, the value and the device.
    """

    def __init__(self, path: str, value: str, err: int, device: str | None = None) -> None:
        self.path = path
        self.value = value
        self.errno = err
        self.device = device
        name = _errno.errorcode.get(err, str(err))
        shown = value.strip() or repr(value)
        who = f"{device}: " if device else ""
        super().__init__(f"{who}writing {shown!s} to {path} failed: {os.strerror(err)} ({name})")


class HostWriteTimeout(Timeout):
    """A write to a kernel control file was still blocked when its time ran out."""

    def __init__(self, path: str, value: str, seconds: float, device: str | None = None,
                 pending: object | None = None) -> None:
        self.path = path
        self.value = value
        self.device = device
        #: The write still in the kernel (vfiod.host.base.PendingWrite): wait on it.
        self.pending = pending
        who = f"{device}: " if device else ""
        super().__init__(
            f"{who}writing {value.strip()!s} to {path} did not return within {seconds:g} s "
            "(the kernel is waiting for whoever holds the device to let it go)"
        )


class ModuleLoadError(Failed):
    """modprobe failed for a module name or a modalias."""


ALL_ERRORS: tuple[type[VfiodError], ...] = (
    InvalidArgument,
    NoSuchDevice,
    InUse,
    GroupNotViable,
    Timeout,
    ResetFailed,
    Quarantined,
    Failed,
    AccessDenied,
)
