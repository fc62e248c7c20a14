"""Fixtures of the torture suite: its sizes and its summary table. The daemon on a
private bus (``private_bus``, ``vfiod``, ``make_vfiod``) comes from tests/conftest.py,
shared with the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .report import Sizes, Summary, sizes as chosen_sizes

_SUMMARY: Summary | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here is torture; the scenarios that start vfiod are integration too."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.torture)


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    """Short (make test) or full (make torture) sizes."""
    return chosen_sizes()


@pytest.fixture(scope="session")
def summary(sizes: Sizes) -> Summary:
    """The run's one table of counts (printed and written at the end of the session)."""
    global _SUMMARY
    if _SUMMARY is None:
        _SUMMARY = Summary(sizes.form)
    return _SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the table, and say where it was written."""
    if _SUMMARY is None or not _SUMMARY.rows:
        return
    path = _SUMMARY.write()
    terminalreporter.write_sep("=", f"torture summary ({_SUMMARY.form} form)")
    terminalreporter.write(_SUMMARY.markdown())
    if path is not None:
        terminalreporter.write_line(f"written to {path} and {path.with_suffix('.json')}")
