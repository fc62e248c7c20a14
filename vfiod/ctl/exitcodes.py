"""vfioctl's exit codes, the D-Bus error names that lead to each, and CtlError.

The codes come from vfiod.errors (``exit_code`` on each error class), so the daemon's
errors and the client's codes cannot drift apart.
"""

from __future__ import annotations

from vfiod.errors import (ALL_ERRORS, AccessDenied, Failed, GroupNotViable, InUse,
                          InvalidArgument, NoSuchDevice, Quarantined, ResetFailed,
                          Timeout)

OK = 0
FAILED = Failed.exit_code  # 1
USAGE = InvalidArgument.exit_code  # 2: argparse uses 2 for usage errors as well
TIMEOUT = Timeout.exit_code  # 6: vfiod's Timeout, and vfiod not answering in time
UNREACHABLE = 9
#: Interrupted by Ctrl-C (the shell's convention: 128 + SIGINT).
INTERRUPTED = 130

#: What each D-Bus error name means to a script.
BY_DBUS_NAME: dict[str, int] = {cls.dbus_name: cls.exit_code for cls in ALL_ERRORS}

# Errors the bus itself sends about org.vfiod1: nobody owns the name, or the daemon
# vanished while the call was in flight. Both mean "vfiod is not there".
_UNREACHABLE_NAMES = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.NoServer",
    "org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
    "org.freedesktop.DBus.Error.Spawn.ChildExited",
    "org.freedesktop.DBus.Error.TimedOut",
})


class CtlError(Exception):
    """A failure vfioctl reports as one line, with the exit code it means."""

    def __init__(self, message: str, exit_code: int = FAILED, dbus_name: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.dbus_name = dbus_name

    def __str__(self) -> str:
        return self.message


def exit_code_for(dbus_name: str) -> int:
    """The exit code for a D-Bus error name; 1 (Failed) for names vfiod does not define."""
    if dbus_name in BY_DBUS_NAME:
        return BY_DBUS_NAME[dbus_name]
    if dbus_name in _UNREACHABLE_NAMES:
        return UNREACHABLE
    return FAILED


def is_unreachable(dbus_name: str) -> bool:
    """True for the bus's errors that mean nobody answers for org.vfiod1."""
    return dbus_name in _UNREACHABLE_NAMES


#: One line per code, for ``vfioctl --help``.
TABLE: tuple[tuple[int, str], ...] = (
    (OK, "success (doctor: no check failed; check-domain: no error found)"),
    (FAILED, "failed (org.vfiod1.Error.Failed or another error; doctor: a check "
             "failed; check-domain: an error found)"),
    (USAGE, "bad arguments (usage; org.vfiod1.Error.InvalidArgument)"),
    (NoSuchDevice.exit_code, "no such device (org.vfiod1.Error.NoSuchDevice)"),
    (InUse.exit_code, "the device is in use (org.vfiod1.Error.InUse)"),
    (GroupNotViable.exit_code, "the IOMMU group cannot be used that way "
                               "(org.vfiod1.Error.GroupNotViable)"),
    (Timeout.exit_code, "timed out (org.vfiod1.Error.Timeout, or vfiod did not answer "
                           "within --timeout)"),
    (ResetFailed.exit_code, "the reset failed (org.vfiod1.Error.ResetFailed)"),
    (AccessDenied.exit_code, "not allowed (org.freedesktop.DBus.Error.AccessDenied)"),
    (UNREACHABLE, "cannot reach vfiod (no bus, or vfiod is not running)"),
    (Quarantined.exit_code, "the device is quarantined after failed resets "
                            "(org.vfiod1.Error.Quarantined; vfioctl reset --clear)"),
    (INTERRUPTED, "interrupted (Ctrl-C); monitor exits 0 on Ctrl-C and SIGTERM"),
)
