"""The optional compiled build: which hot modules are compiled, and the switch that forces the
pure-Python build.

Installing cutover where Cython and a C compiler are available (`pip install .`, editable
installs included) compiles the modules in `COMPILED_MODULES` from their own `.py` sources
(Cython's pure-Python mode: one source, no `.pyx`); `setup.py` reads the list from this file.
Each compiled module sits beside its source under the same name, so every module keeps one
identity whichever build runs: the classes and exceptions the hot modules share
(`proxy.pool.Response`, `UpstreamFailure`, `proxy.attempts.ProxyOutcome`, …) are the same
objects to every importer, and `isinstance` and `except` behave the same in both builds.

The interpreter prefers an extension module to a source of the same name, so the pure build is
chosen at run time by an import hook (`install`, run by the package root before anything else
of cutover is imported): with `CUTOVER_NO_EXTENSIONS` set to anything but "" or "0", each of
these modules is loaded from its `.py` source instead. The hook also loads the source when a
compiled module in a source checkout is older than its `.py` (an edit since the last
`pip install -e .`), with a warning, so a stale build never runs edited code's old version.

`cutover version` and `/readyz` report the build that runs (`describe`). This module sits on
the ground floor and imports none of those modules: it asks `sys.modules`, or the import system
where a module not imported yet would be loaded from.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

ENV_SWITCH = "CUTOVER_NO_EXTENSIONS"

# (module, source path under the repository root): the fast path's hot modules. Read by
# setup.py with `ast.literal_eval`: keep it a literal.
COMPILED_MODULES = (
    ("cutover.proxy.fastpath", "proxy/fastpath.py"),
    ("cutover.proxy.pool", "proxy/pool.py"),
    ("cutover.proxy.requestflow", "proxy/requestflow.py"),
    ("cutover.proxy.pipeline", "proxy/pipeline.py"),
    ("cutover.proxy.attempts", "proxy/attempts.py"),
    ("cutover.proxy.headers", "proxy/headers.py"),
    ("cutover.proxy.accesslog", "proxy/accesslog.py"),
    ("cutover.routing.murmur", "routing/murmur.py"),
    ("cutover.routing.match", "routing/match.py"),
    ("cutover.routing.health", "routing/health.py"),
)
_NAMES = frozenset(name for name, _ in COMPILED_MODULES)
_EXT_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)

log = logging.getLogger("cutover")


def extensions_disabled() -> bool:
    """True when `CUTOVER_NO_EXTENSIONS` asks for the pure-Python build."""
    return os.environ.get(ENV_SWITCH, "") not in ("", "0")


def _in_source_tree(path: str) -> bool:
    """An editable install's module (a checkout, where mtimes follow edits), not a wheel's."""
    parts = path.replace(os.sep, "/").split("/")
    return "site-packages" not in parts and "dist-packages" not in parts


class _PureFinder(importlib.abc.MetaPathFinder):
    """Loads a compiled hot module from its `.py` source when the pure build is asked for
    (or the compiled one is stale); every other import goes on as usual."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _NAMES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        origin = spec.origin if spec is not None else None
        if origin is None or not origin.endswith(_EXT_SUFFIXES):
            return None  # no compiled module: the usual finders load the source
        source = os.path.join(os.path.dirname(origin), fullname.rpartition(".")[2] + ".py")
        if not os.path.exists(source):
            return None  # compiled only: nothing else to load
        if not extensions_disabled():
            if not _in_source_tree(origin) or os.path.getmtime(source) <= os.path.getmtime(origin):
                return None  # the compiled module, as built
            log.warning(
                "%s: the compiled module is older than its source; running the source "
                "(rebuild with `pip install -e .`)",
                fullname,
            )
        return importlib.util.spec_from_file_location(fullname, source)


def install() -> None:
    """Put the hook first on `sys.meta_path` (once)."""
    if not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder())


def _origin(name: str) -> str:
    """Where module `name` was loaded from, or would be (not importing it)."""
    module = sys.modules.get(name)
    if module is not None:
        return str(getattr(module, "__file__", "") or "")
    spec = importlib.util.find_spec(name)  # through the hook above, as an import would go
    return (spec.origin or "") if spec is not None else ""


def build_detail() -> dict[str, str]:
    """Each hot module and how it runs: "compiled" or "pure"."""
    return {
        name: "compiled" if _origin(name).endswith(_EXT_SUFFIXES) else "pure"
        for name, _ in COMPILED_MODULES
    }


def build_kind() -> str:
    """ "compiled" when every hot module runs compiled, "pure" when none does, else "partial"
    (a module that failed to compile at install time)."""
    kinds = set(build_detail().values())
    return kinds.pop() if len(kinds) == 1 else "partial"


def describe() -> dict[str, Any]:
    """What `cutover version` and `/readyz` show: the build, and what forced or broke it."""
    detail = build_detail()
    kinds = set(detail.values())
    kind = kinds.pop() if len(kinds) == 1 else "partial"
    out: dict[str, Any] = {"build": kind}
    if kind == "partial":
        out["pure_modules"] = sorted(n for n, k in detail.items() if k == "pure")
    if extensions_disabled():
        out["forced_by"] = ENV_SWITCH
    return out
