"""Malformed device arguments are refused before any I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiod.address import check_device_argument, normalize_address
from vfiod.engine import Engine
from vfiod.errors import InvalidArgument, NoSuchDevice
from vfiod.sim import SimHost

BAD = ["../../x", "0000:06:00.0/../../", "", "x" * 10_000, "0000:06:00.0\n", "gpu/..",
       "０６:００.０", "06:00.0 ", "06:00.8", "0000:06:20.0", "🙂", "\x00", "10de:1b06"]


@pytest.mark.parametrize("arg", BAD, ids=[repr(b)[:20] for b in BAD])
@pytest.mark.parametrize("operation", ["bind", "unbind", "reset", "resolve"])
def test_malformed_argument_is_invalid_and_touches_nothing(host: SimHost, tmp_path,
                                                           arg: str, operation: str,
                                                           monkeypatch) -> None:
    engine = Engine(host, tmp_path / "state")
    touched: list[str] = []
    real_path = host.real_path
    monkeypatch.setattr(host, "real_path", lambda p: touched.append(p) or real_path(p))
    with pytest.raises(InvalidArgument):
        getattr(engine, operation)(arg)
    assert touched == []


def test_unknown_address_is_no_such_device(engine: Engine) -> None:
    with pytest.raises(NoSuchDevice, match="0000:77:00.0"):
        engine.bind("77:00.0")


def test_unknown_name_without_config_is_invalid(engine: Engine) -> None:
    with pytest.raises(InvalidArgument, match="neither a PCI address"):
        engine.bind("gpu")


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_string_is_an_address_a_name_or_invalid(text: str) -> None:
    try:
        value = check_device_argument(text)
    except InvalidArgument as exc:
        assert len(str(exc)) < 300  # a long argument is not echoed whole
        return
    assert value == normalize_address(text) or value == text
    assert "/" not in value and "\x00" not in value
