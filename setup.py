"""The optional compiled build of the fast path's hot modules (issue 21).

Everything else about the package is in pyproject.toml. The default install is pure Python:
compiled, the modules cost as much CPU per request as pure (BENCHMARKS.md, issue 21) and every
install would pay a minute of compiling for it. With `CUTOVER_COMPILE=1` at install time, where
Cython (a build requirement) and a C compiler are available, the modules
`cutover.core.build.COMPILED_MODULES` lists are compiled from their own `.py` sources (Cython's
pure-Python mode); without a compiler the package installs as pure Python and says so in one
line (`pip install -v` shows it; `cutover version` says which build runs).
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
SWITCH = "CUTOVER_NO_EXTENSIONS"  # forces the pure build (at run time too: core/build.py)
OPT_IN = "CUTOVER_COMPILE"  # asks for the compiled build at install time


# setup.py runs once per build hook (requirements, metadata, wheel): speak in the one that builds.
_BUILDING = not {"egg_info", "dist_info"} & set(sys.argv[1:])


def _say(message: str) -> None:
    if _BUILDING:
        print(f"cutover build: {message}", file=sys.stderr, flush=True)


def _compiled_modules() -> list[tuple[str, str]]:
    """`COMPILED_MODULES` from core/build.py, read without importing the package."""
    tree = ast.parse((HERE / "core" / "build.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED_MODULES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("core/build.py has no COMPILED_MODULES")


class _OptionalBuildExt(build_ext):
    """build_ext that installs the pure-Python build when compiling fails: all modules
    compiled or none (a half-compiled build would report itself "partial")."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError), or worse
            self._give_up(exc)

    def build_extensions(self) -> None:
        try:
            super().build_extensions()
        except Exception as exc:  # CCompilerError, DistutilsExecError, a missing header, ...
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        for ext in self.extensions:  # what did compile is removed: the sources run instead
            with contextlib.suppress(OSError):
                os.remove(self.get_ext_fullpath(ext.name))
        _say(f"compiling failed ({exc}); installing the pure-Python build")


def _extensions() -> list[Extension]:
    if os.environ.get(OPT_IN, "") in ("", "0"):
        _say(f"installing the pure-Python build ({OPT_IN}=1 compiles the fast path's modules)")
        return []
    if os.environ.get(SWITCH, "") not in ("", "0"):
        _say(f"{SWITCH} is set; installing the pure-Python build")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say("Cython is not available; installing the pure-Python build")
        return []
    # No debug information: a fifth of the size and of the compile time (fastpath: 5 MB with it).
    flags = [] if sys.platform == "win32" else ["-g0"]
    modules = [
        Extension(name, [source], extra_compile_args=flags) for name, source in _compiled_modules()
    ]
    try:
        return cythonize(
            modules,
            build_dir="build/cython",  # the generated C stays out of the source folders
            compiler_directives={
                "language_level": 3,
                "binding": True,  # functions stay introspectable, methods bind as in Python
                "annotation_typing": False,  # annotations are for readers: no C type checks
                "embedsignature": True,
            },
            quiet=True,
        )
    except Exception as exc:
        _say(f"Cython could not translate the hot modules ({exc}); installing the pure build")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": _OptionalBuildExt})
