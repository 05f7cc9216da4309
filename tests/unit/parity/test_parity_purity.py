"""parity's diff engine and noise rule are pure (DESIGN.md, Purity and packaging)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.routing.test_routing_purity import violations

PARITY = Path(__file__).resolve().parents[3] / "parity"


@pytest.mark.parametrize("name", ["diff.py", "noise.py"])
def test_engine_is_pure(name: str) -> None:
    path = PARITY / name
    assert violations(path.read_text(), str(path)) == []
