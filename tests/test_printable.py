"""Text from the machine made safe to print: one function, used wherever it is shown."""

from __future__ import annotations

import pytest

from vfiod.printable import printable


def test_an_osc_title_sequence_is_shown_escaped() -> None:
    assert printable("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07"


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\r", "\x1b", "\x1f"])
def test_c0_controls_are_escaped(char: str) -> None:
    assert printable(f"a{char}b") == f"a\\x{ord(char):02x}b"


@pytest.mark.parametrize("char", ["\x7f", "\x80", "\x9b", "\x9f"])
def test_del_and_c1_controls_are_escaped(char: str) -> None:
    assert printable(char) == f"\\x{ord(char):02x}"


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u2028"])
def test_bidi_overrides_and_line_separators_are_escaped(char: str) -> None:
    assert printable(char) == f"\\u{ord(char):04x}"


def test_printable_text_is_returned_unchanged() -> None:
    text = "GP102 [GeForce GTX 1080 Ti] Xorg (pid 4242) — café ü 日本"
    assert printable(text) is text
