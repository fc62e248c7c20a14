"""The host boundary: the one place vfiod reads or writes /sys, /dev and /proc.

``Host`` is the interface. ``RealHost`` (vfiod.host.real) is the machine, rooted at ``/``
by default; ``SimHost`` (vfiod.sim) is the simulated kernel. Nothing else in the package
touches the host: grep for ``write_attr`` to find every kernel write vfiod makes.
"""

from vfiod.host.base import EventSource, Host, Process, UEvent

__all__ = ["EventSource", "Host", "Process", "UEvent"]
