"""The applet's own config: which notifications it sends (~/.config/vfiod/applet.toml).

```toml
[notifications]
guest_took = true        # a guest took a device
device_back = true       # a device came back from its guest
device_error = true      # a reset failed, a device is in error or quarantined
operation_finished = true  # an operation started from the applet finished
releasing = true         # a forced Bind asks the desktop to let go of a GPU it uses
```
A missing file means every kind is on; a bad one is reported and ignored.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

#: The kinds of notification, in the order the config file documents them.
NOTIFICATION_KINDS: tuple[str, ...] = (
    "guest_took", "device_back", "device_error", "operation_finished", "releasing")


class SettingsError(ValueError):
    """The config file is unreadable or malformed; the message says where."""


@dataclass
class AppletSettings:
    """What the applet's config file says (every notification kind on by default)."""

    notifications: dict[str, bool] = field(
        default_factory=lambda: {kind: True for kind in NOTIFICATION_KINDS})

    def notifies(self, kind: str) -> bool:
        """True when notifications of *kind* are on."""
        return self.notifications.get(kind, True)


def default_path() -> Path:
    """$XDG_CONFIG_HOME/vfiod/applet.toml (~/.config by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "vfiod" / "applet.toml"


def parse_settings(text: str, where: str = "applet.toml") -> AppletSettings:
    """Settings from the text of a config file; SettingsError naming the fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    settings = AppletSettings()
    unknown_tables = set(data) - {"notifications"}
    if unknown_tables:
        raise SettingsError(f"{where}: unknown table(s) {', '.join(sorted(unknown_tables))}")
    table = data.get("notifications", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: [notifications] must be a table")
    for key, value in table.items():
        if key not in NOTIFICATION_KINDS:
            raise SettingsError(f"{where}: notifications.{key}: unknown kind (known: "
                                f"{', '.join(NOTIFICATION_KINDS)})")
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: notifications.{key}: must be true or false")
        settings.notifications[key] = value
    return settings


def load_settings(path: Path | None = None) -> AppletSettings:
    """Settings from *path* (default_path() by default); defaults when it is missing."""
    path = path or default_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return AppletSettings()
    except OSError as exc:
        raise SettingsError(f"{path}: {exc.strerror}") from None
    return parse_settings(text, str(path))
