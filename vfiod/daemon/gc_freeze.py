"""Python's cyclic garbage collector around vfiod's long-lived state.

Start-up builds the state the daemon keeps for its whole life: the engine's view of
every PCI function, one D-Bus object per function (and, with ``--simulate``, the
simulated kernel). On a machine with thousands of functions that is some 400,000
objects. While they are being made, the collector keeps running full collections over
all of them, each finding nothing (a few hundred ms of start-up on the ``scale``
profile); afterwards, every full collection still walks them all, blocking the event
loop for 100-200 ms at a moment nobody chose (the first GetManagedObjects, say).

So the collector is paused while start-up builds, runs once when it is done, and the
survivors are frozen (``gc.freeze``): later collections skip them. Frozen objects are
still freed by reference counting when dropped, but one in a reference cycle is not:
an unexported D-Bus object is in one (dbus-fast keeps method handlers that refer back
to it). So when long-lived objects go away, ``collect_frozen`` runs one collection
over everything and freezes the survivors again.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def building_long_lived_state() -> Iterator[None]:
    """Run the block without cyclic garbage collection; if it succeeds, collect once and
    freeze what is alive then, so later collections skip it. Collection is restored
    (when it was on) either way."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        # Still disabled: no young-generation pass over everything just made first.
        gc.collect()
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


def collect_frozen() -> None:
    """After long-lived objects were dropped: collect over everything, frozen objects
    included, then freeze the survivors again. Nothing to do when nothing is frozen."""
    if gc.get_freeze_count() == 0:
        return
    gc.unfreeze()
    gc.collect()
    gc.freeze()
