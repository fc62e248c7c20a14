"""Unit tests of the daemon's parts (no daemon process; a private bus where needed)."""
