"""routing/ is pure: no I/O, no clock, no randomness (DESIGN.md, Purity and packaging)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROUTING = Path(__file__).resolve().parents[3] / "routing"
FORBIDDEN_MODULES = {"aiohttp", "asyncio", "socket", "time", "random"}
FORBIDDEN_CALLS = {"now", "utcnow", "today"}  # datetime.now() and friends read the clock


def violations(source: str, filename: str = "<src>") -> list[str]:
    """Each forbidden import or clock read in `source`, as "file:line: what"."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{filename}:{node.lineno}: imports {name}")
        if isinstance(node, ast.ImportFrom) and node.module in {"datetime"}:
            found += [
                f"{filename}:{node.lineno}: imports datetime.{a.name}"
                for a in node.names
                if a.name in FORBIDDEN_CALLS
            ]
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_CALLS:
            base = node.value
            base_name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            if base_name in {"datetime", "date"}:
                found.append(f"{filename}:{node.lineno}: reads the clock ({base_name}.{node.attr})")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.append(f"{filename}:{node.lineno}: dynamic __import__")
    return found


def routing_modules() -> list[Path]:
    return sorted(ROUTING.rglob("*.py"))


def test_routing_has_modules() -> None:
    names = {p.name for p in routing_modules()}
    assert {"murmur.py", "split.py", "match.py", "decision.py", "health.py"} <= names


@pytest.mark.parametrize("path", routing_modules(), ids=lambda p: str(p.relative_to(ROUTING)))
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(), str(path)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import aiohttp",
        "import asyncio.tasks",
        "from socket import socket",
        "import time",
        "from time import monotonic",
        "import random as r",
        "import datetime\nx = datetime.datetime.now()",
        "from datetime import datetime\nx = datetime.utcnow()",
        "from datetime import date\nx = date.today()",
        "m = __import__('time')",
    ],
)
def test_checker_catches(source: str) -> None:
    assert violations(source)


@pytest.mark.parametrize(
    "source",
    ["import ipaddress", "from routing.murmur import bucket_of", "from . import timeouts"],
)
def test_checker_allows(source: str) -> None:
    assert violations(source) == []
