"""The host boundary: the one place vfiod reads or writes /sys, /dev and /proc.

``Host`` is the interface. ``RealHost`` (vfiod.host.real) is the machine, rooted at ``/``
by default; ``SimHost`` (vfiod.sim) is the simulated kernel. Nothing else in the package
touches the host: every kernel write vfiod makes is a ``write_attr`` (sysfs control
files), a ``load_module`` (modprobe) or a ``vfio_hot_reset`` (VFIO ioctls, host/vfio.py).
"""

from vfiod.host.base import EventSource, Host, Process, UEvent

__all__ = ["EventSource", "Host", "Process", "UEvent"]
