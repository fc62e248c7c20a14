"""Integration tests: a real dbus-daemon, a real vfiod on a simulated host, real clients."""
