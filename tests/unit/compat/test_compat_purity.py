"""compat/ is pure: no I/O, no clock, no randomness (DESIGN.md, Purity and packaging)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.routing.test_routing_purity import violations

COMPAT = Path(__file__).resolve().parents[3] / "compat"


def modules() -> list[Path]:
    return sorted(COMPAT.rglob("*.py"))


def test_compat_has_its_modules() -> None:
    names = {p.name for p in modules()}
    assert {"rules.py", "jsonops.py", "query.py", "usage.py", "config.py"} <= names


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(), str(path)) == []
