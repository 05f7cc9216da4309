"""The build that is reported is the build that runs (core/build.py, issue 21).

`CUTOVER_NO_EXTENSIONS=1` must load every hot module from its source even where the compiled
one is installed beside it, and `cutover version` must say so. Both are checked in fresh
interpreters, since the switch is read when the modules are first imported.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cutover.core import build

ROOT = Path(__file__).resolve().parents[3]

_PROBE = """
import importlib, json
import cutover.proxy.server  # the gateway's own imports first, then each hot module
from cutover.core.build import COMPILED_MODULES, describe
files = {name: importlib.import_module(name).__file__ for name, _ in COMPILED_MODULES}
print(json.dumps({"describe": describe(), "files": files}))
"""


def _probe(**env: str) -> dict[str, object]:
    run_env = {k: v for k, v in os.environ.items() if k != build.ENV_SWITCH}
    run_env.update(env)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=run_env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _compiled(path: str) -> bool:
    return path.endswith(tuple(build._EXT_SUFFIXES))


def _kind(compiled: int, total: int) -> str:
    return "pure" if not compiled else "compiled" if compiled == total else "partial"


def test_every_listed_module_has_its_source() -> None:
    for name, source in build.COMPILED_MODULES:
        assert (ROOT / source).is_file(), source
        folder, _, stem = name.removeprefix("cutover.").rpartition(".")
        assert source == f"{folder.replace('.', '/')}/{stem}.py"


def test_setup_reads_the_same_list() -> None:
    """setup.py reads COMPILED_MODULES as a literal: it must stay one."""
    tree = ast.parse((ROOT / "core" / "build.py").read_text())
    values = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "COMPILED_MODULES" for t in node.targets)
    ]
    assert values == [build.COMPILED_MODULES]


def test_reported_build_matches_what_is_imported() -> None:
    """In this interpreter: `describe` agrees with the files the modules came from."""
    import cutover.proxy.fastpath  # noqa: F401 - imported for its __file__

    files = {name: sys.modules[name].__file__ or "" for name, _ in build.COMPILED_MODULES}
    compiled = {name for name, path in files.items() if _compiled(path)}
    assert build.describe()["build"] == _kind(len(compiled), len(files))
    if build.extensions_disabled():
        assert not compiled


def test_switch_forces_the_pure_build() -> None:
    seen = _probe(**{build.ENV_SWITCH: "1"})
    assert seen["describe"] == {"build": "pure", "forced_by": build.ENV_SWITCH}
    files = seen["files"]
    assert isinstance(files, dict)
    assert all(path.endswith(".py") for path in files.values()), files


def test_default_build_is_reported_as_it_runs() -> None:
    seen = _probe()
    files = seen["files"]
    assert isinstance(files, dict)
    compiled = [name for name, path in files.items() if _compiled(path)]
    assert seen["describe"]["build"] == _kind(len(compiled), len(files))  # type: ignore[index]


@pytest.mark.parametrize("forced", [False, True])
def test_cutover_version_says_which_build(forced: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != build.ENV_SWITCH}
    if forced:
        env[build.ENV_SWITCH] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "cutover", "version", "--modules"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith("cutover ")
    if forced:
        assert out[0].endswith(f"(pure, forced by {build.ENV_SWITCH})")
        assert all(line.endswith(": pure") for line in out[1:])
    else:
        kinds = {line.rpartition(": ")[2] for line in out[1:]}
        kind = kinds.pop() if len(kinds) == 1 else "partial"
        assert out[0].endswith(f"({kind})")
    assert len(out) == 1 + len(build.COMPILED_MODULES)


def test_stale_compiled_module_in_a_checkout_yields_to_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit after `pip install -e .` runs the edited source, not the old compiled module;
    a compiled module newer than its source is left to the usual import."""
    monkeypatch.delenv(build.ENV_SWITCH, raising=False)
    monkeypatch.setattr(build, "_NAMES", frozenset({"pkg.hot"}))
    source = tmp_path / "hot.py"
    source.write_text("WHERE = 'source'\n")
    compiled = tmp_path / f"hot{build._EXT_SUFFIXES[0]}"
    compiled.write_bytes(b"stands in for a compiled module")
    now = source.stat().st_mtime
    finder = build._PureFinder()

    os.utime(compiled, (now - 100, now - 100))
    stale = finder.find_spec("pkg.hot", [str(tmp_path)])
    assert stale is not None and stale.origin == str(source)

    os.utime(compiled, (now + 100, now + 100))
    assert finder.find_spec("pkg.hot", [str(tmp_path)]) is None

    monkeypatch.setenv(build.ENV_SWITCH, "1")
    forced = finder.find_spec("pkg.hot", [str(tmp_path)])
    assert forced is not None and forced.origin == str(source)
