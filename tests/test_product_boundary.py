"""What ships is the product: no test knobs, no simulated crashes, no tests imports."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vfiod"
SIMULATED_HOST = PACKAGE / "sim"


def product_modules() -> list[Path]:
    """Every module of the package outside the simulated host."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if SIMULATED_HOST not in p.parents]


def test_the_package_has_modules_to_check() -> None:
    assert PACKAGE / "daemon" / "main.py" in product_modules()


def test_no_product_module_reads_the_test_knobs() -> None:
    assert [p for p in product_modules() if "VFIOD_SIM_TEST_KNOBS" in p.read_text()] == []


def test_no_product_module_knows_simulated_crashes() -> None:
    assert [p for p in product_modules() if "SimulatedCrash" in p.read_text()] == []


def test_nothing_in_the_package_imports_the_tests() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+tests\b", re.MULTILINE)
    assert [p for p in sorted(PACKAGE.rglob("*.py")) if pattern.search(p.read_text())] == []
