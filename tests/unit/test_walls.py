"""The floors of the layout, checked on every import of every product file (DESIGN.md, Purity and
packaging; README, Layout).

An AST scan, so it sees our own imports as well as the standard library's, and imports inside
functions as well as at the top:

- `core` imports nothing else of ours.
- The pure floors — `routing`, compat's rules (all of `compat` but its runtime: `PURE_EXCEPT`),
  the alerts' rules (all of `alerts` but intake and the LLM client) and parity's diff engine —
  import only `core` and their own package of ours, do no I/O (aiohttp, asyncio, sockets, Redis,
  the stores, subprocesses, threads) and read no clock and no randomness.
- Only the app (`cutover/`: the CLI, the feature list, supervisor, demo, ctl) and tests import
  the app; only the demo imports `examples`.
- No import circle between files. An import under `if TYPE_CHECKING:` never runs, so it is left
  out of the circle rule (annotations may name a type of a floor above); it is held to the
  floors all the same.
- Tests import the product as `cutover.…` only: a stray `import proxy` would pass only while the
  repository root happened to be on `sys.path`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "cutover"
FOLDERS = (
    "core",
    "routing",
    "compat",
    "alerts",
    "canary",
    "proxy",
    "publishing",
    "parity",
    "bench",
    "nginx",
    "examples",
)
# Pure floors: package -> its modules that are not pure (I/O, the runtime beside the rules).
PURE_EXCEPT: dict[str, frozenset[str]] = {
    "cutover.routing": frozenset(),
    "cutover.compat": frozenset(
        {"cutover.compat.feature", "cutover.compat.store", "cutover.compat.cli"}
    ),
    "cutover.alerts": frozenset({"cutover.alerts.intake", "cutover.alerts.llm"}),
}
PURE_MODULES = frozenset({"cutover.parity.diff", "cutover.parity.noise"})
IO_MODULES = frozenset(
    {
        "aiohttp",
        "asyncio",
        "socket",
        "ssl",
        "selectors",
        "time",
        "random",
        "subprocess",
        "threading",
        "multiprocessing",
        "uvloop",
        "httptools",
        "redis",
        "asyncpg",
        "aiosqlite",
        "sqlite3",
        "openai",
        "kubernetes_asyncio",
        "urllib3",
        "http",
    }
)
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})  # datetime.now() and friends
OLD_NAMES = frozenset(FOLDERS)  # the folders' own names are not import names


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the imported module (or the package a name was taken from)
    names: tuple[str, ...]  # `from module import names`; () for `import module`
    line: int
    type_checking: bool  # under `if TYPE_CHECKING:`: never runs


def module_name(path: Path) -> str:
    """The import name of a product file: `proxy/server.py` -> `cutover.proxy.server`."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts[0] == PACKAGE else ".".join([PACKAGE, *parts])


def product_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for folder in (PACKAGE, *FOLDERS):
        for path in sorted((ROOT / folder).rglob("*.py")):
            files[module_name(path)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, module: str = "m", is_package: bool = False) -> list[Import]:
    """Every import in `source` (relative ones resolved against `module`)."""
    tree = ast.parse(source)
    found: list[Import] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, (), node.lineno, guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join([*parts[:keep], *([base] if base else [])])
            found.append(Import(base, tuple(a.name for a in node.names), node.lineno, guarded))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def targets(imp: Import, known: set[str] | dict[str, Path]) -> list[str]:
    """The product modules an import loads: `from cutover.proxy import config` loads
    `cutover.proxy.config` (and the package)."""
    out = [imp.module] if imp.module in known else []
    out += [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in known]
    return out


def is_ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def package_of(module: str) -> str:
    """`cutover.proxy.server` -> `cutover.proxy`; the app's modules -> `cutover`."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in FOLDERS:
        return ".".join(parts[:2])
    return PACKAGE


def is_pure(module: str) -> bool:
    pkg = package_of(module)
    return module in PURE_MODULES or (pkg in PURE_EXCEPT and module not in PURE_EXCEPT[pkg])


def io_violations(source: str, filename: str = "<src>") -> list[str]:
    """Each I/O import or clock read in `source`, as "file:line: what"."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [
            f"{filename}:{node.lineno}: imports {name}"
            for name in names
            if name.split(".")[0] in IO_MODULES
        ]
        if isinstance(node, ast.ImportFrom) and node.module == "datetime":
            found += [
                f"{filename}:{node.lineno}: imports datetime.{a.name}"
                for a in node.names
                if a.name in CLOCK_CALLS
            ]
        if isinstance(node, ast.Attribute) and node.attr in CLOCK_CALLS:
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


def floor_violations(
    module: str, found: list[Import], known: set[str] | dict[str, Path]
) -> list[str]:
    """What `module` imports of ours that its floor forbids."""
    out = []
    pkg = package_of(module)
    for imp in found:
        for target in targets(imp, known) or ([imp.module] if is_ours(imp.module) else []):
            tpkg = package_of(target)
            where = f"{module}:{imp.line}: imports {target}"
            if pkg == "cutover.core" and tpkg != "cutover.core":
                out.append(f"{where} (core imports nothing else of ours)")
            elif (
                is_pure(module) and tpkg != "cutover.core" and not (tpkg == pkg and is_pure(target))
            ):
                out.append(f"{where} (a pure module imports only core and its own rules)")
            elif tpkg == PACKAGE and target != PACKAGE and pkg != PACKAGE:
                out.append(f"{where} (only the app imports the app)")
            elif tpkg == "cutover.examples" and module != "cutover.demo" and pkg != tpkg:
                out.append(f"{where} (only the demo imports the examples)")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph` (Tarjan's strongly connected components, size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the product modules it imports when it runs (TYPE_CHECKING imports left out)."""
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        found = imports(path.read_text(), module, path.name == "__init__.py")
        edges = {t for imp in found if not imp.type_checking for t in targets(imp, files)}
        graph[module] = edges - {module}
    return graph


FILES = product_files()


def _scan() -> Iterator[tuple[str, Path, list[Import]]]:
    for module, path in FILES.items():
        yield module, path, imports(path.read_text(), module, path.name == "__init__.py")


def test_the_layout_is_there() -> None:
    packages = {package_of(m) for m in FILES}
    assert {f"{PACKAGE}.{f}" for f in FOLDERS} <= packages
    assert {"cutover.app", "cutover.cli", "cutover.core.configkit", "cutover.proxy.host"} <= set(
        FILES
    )
    for pkg, runtime in PURE_EXCEPT.items():
        assert runtime <= set(FILES), f"{pkg}: the wall names modules that are gone"


def test_floors() -> None:
    problems = [p for module, _, found in _scan() for p in floor_violations(module, found, FILES)]
    assert problems == []


@pytest.mark.parametrize("module", sorted(m for m in FILES if is_pure(m)))
def test_pure_modules_do_no_io(module: str) -> None:
    path = FILES[module]
    assert io_violations(path.read_text(), str(path.relative_to(ROOT))) == []


def test_no_import_circle() -> None:
    assert cycles(import_graph(FILES)) == []


def test_tests_import_the_package_only() -> None:
    problems = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for imp in imports(path.read_text(), "tests.x"):
            if imp.module.split(".")[0] in OLD_NAMES:
                problems.append(f"{path.relative_to(ROOT)}:{imp.line}: imports {imp.module}")
    assert problems == []


# -- the checker itself -----------------------------------------------------------------------


KNOWN = {
    "cutover.core.clock",
    "cutover.core.configkit",
    "cutover.proxy.server",
    "cutover.routing.split",
    "cutover.routing.murmur",
    "cutover.compat.rules",
    "cutover.compat.feature",
    "cutover.alerts.model",
    "cutover.app",
    "cutover.examples.backends",
}


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("cutover.core.clock", "from cutover.routing.split import SplitTable"),
        ("cutover.core.clock", "def f():\n    import cutover.proxy.server"),
        ("cutover.routing.split", "from cutover.proxy.server import Gateway"),
        ("cutover.routing.split", "from cutover.alerts.model import Alert"),
        ("cutover.routing.split", "if TYPE_CHECKING:\n    from cutover.proxy import server"),
        ("cutover.compat.rules", "from cutover.compat.feature import CompatFeature"),
        ("cutover.alerts.model", "from cutover.compat.rules import Rule"),
        ("cutover.proxy.server", "from cutover.app import FEATURES"),
        ("cutover.proxy.server", "from cutover.examples.backends import main"),
    ],
)
def test_checker_catches_floor(module: str, source: str) -> None:
    assert floor_violations(module, imports(source, module), KNOWN)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("cutover.routing.split", "from cutover.routing.murmur import bucket_of"),
        ("cutover.routing.split", "from cutover.core.clock import Clock"),
        ("cutover.compat.feature", "from cutover.proxy.server import Gateway"),
        ("cutover.demo", "from cutover.examples.backends import main"),
        ("cutover.cli", "from cutover.app import FEATURES"),
        ("cutover.proxy.server", "from . import split"),
    ],
)
def test_checker_allows_floor(module: str, source: str) -> None:
    assert floor_violations(module, imports(source, module), KNOWN) == []


@pytest.mark.parametrize(
    "source",
    [
        "import aiohttp",
        "import asyncio.tasks",
        "from socket import socket",
        "import time",
        "from time import monotonic",
        "import random as r",
        "import redis.asyncio",
        "import datetime\nx = datetime.datetime.now()",
        "from datetime import datetime\nx = datetime.utcnow()",
        "from datetime import date\nx = date.today()",
        "m = __import__('time')",
    ],
)
def test_checker_catches_io(source: str) -> None:
    assert io_violations(source)


def test_checker_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    found = imports("if TYPE_CHECKING:\n    import cutover.app\nimport cutover.core.clock")
    assert [(i.module, i.type_checking) for i in found] == [
        ("cutover.app", True),
        ("cutover.core.clock", False),
    ]
