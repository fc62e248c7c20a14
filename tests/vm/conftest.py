"""The real-kernel tier's host side: only its own unit tests are collected here.

``guest/`` runs inside the QEMU guest (``python -m tests.vm.run``); a host run of
``pytest tests`` must not even import it.
"""

from __future__ import annotations

from .marker import in_test_guest

collect_ignore = [] if in_test_guest() else ["guest"]
