"""What the malformed-call torture counts as the implementation's insides in a reply."""

from __future__ import annotations

from .machine import internal_text

#: dbus-daemon 1.14's refusal, from `make test-minbase`, where the checkout is /srv/vfiod.
BUS_REFUSAL = (
    'Rejected send message, 1 matched rules; type="method_call", sender=":1.7" (uid=0 '
    'pid=4809 comm="/srv/vfiod/.venv/bin/python -m pytest tests") interface="org.vfiod1.'
    'Nope" member="GetAll" error name="(unset)" requested_reply="0" destination='
    '"org.vfiod1" (uid=0 pid=4811 comm="/srv/vfiod/.venv/bin/python -m vfiod.daemon.main")')


def test_the_bus_naming_a_caller_under_a_vfiod_folder_is_no_internal_text() -> None:
    assert not internal_text(BUS_REFUSAL)


def test_a_source_path_of_vfiod_is_internal_text() -> None:
    assert internal_text("failed at /usr/lib/vfiod/vfiod/engine/plan.py line 12")


def test_a_traceback_is_internal_text() -> None:
    assert internal_text("Traceback (most recent call last):")
