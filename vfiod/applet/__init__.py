"""vfiod-applet: a StatusNotifierItem tray applet for vfiod, with notifications.

It talks to vfiod only over D-Bus (the contract in DESIGN.md), follows it by signals
only, and shows its menu over com.canonical.dbusmenu. One module per job:

- ``settings``: the applet's own config (~/.config/vfiod/applet.toml).
- ``model``: the menu and the icon's look, pure functions of what vfiod reports.
- ``icons``: the three looks as theme icon names and as ARGB pixmaps drawn here.
- ``follower``: vfiod's devices kept current from its signals.
- ``dbusmenu``, ``sni``: the two tray-side D-Bus interfaces.
- ``notifier``: org.freedesktop.Notifications, one kind at a time.
- ``app``, ``main``: the wiring and the command line.
"""
