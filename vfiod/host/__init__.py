"""The host boundary: the one place vfiod reads or writes /sys, /dev and /proc.

``paths`` is the map: every kernel path vfiod knows, by what it means. ``Host`` is the
interface. ``RealHost`` (vfiod.host.real) is the machine, rooted at ``/`` by default;
``SimHost`` (vfiod.sim) is the simulated kernel. Nothing else in the package touches
the host: every kernel write vfiod makes is a ``write_attr`` (sysfs control files), a
``load_module`` (modprobe) or a ``vfio_hot_reset`` (VFIO ioctls, host/vfio.py), and
what happens on the machine arrives through ``open_events()`` (uevents) and
``open_holder_events()`` (/dev/vfio opened and closed, holders exiting; host/holders.py).
"""

from vfiod.host.base import EventSource, Host, Process, UEvent
from vfiod.host.holders import HolderEvent, HolderEventSource

__all__ = ["EventSource", "HolderEvent", "HolderEventSource", "Host", "Process", "UEvent"]
