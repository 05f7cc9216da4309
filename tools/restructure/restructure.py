"""Move the repository's modules under one import package `cutover` and rewrite every reference.

Run from the repository root: `python tools/restructure/restructure.py [--dry-run]`.
See PLAN.md beside this file. Idempotent: a second run changes nothing.

Two halves:
- modules: `git mv` the files of the module map, then rewrite every reference to an old module
  name (imports found by the AST, dotted names in strings, docstrings, comments and docs,
  `python -m proxy`, moved file paths, pyproject, .ci/run). A module the map does not name
  keeps its folder: `X/m.py` is `cutover.X.m`.
- names: `from M import a` becomes `from N import a` for each (M, a) -> N of NAME_MOVES whose
  new module N defines `a` at its top level (so it is safe before the code moved, and catches
  files that arrived later).
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path.cwd()
OLD_TOP = ("proxy", "routing", "compat", "publishing", "parity", "bench", "nginx", "examples")
NEW_TOP = ("core", "alerts", "canary")  # new folders (plus `cutover/`, the package root)
PACKAGE = "cutover"

# old file -> new file
FILE_MOVES: dict[str, str] = {
    "proxy/__main__.py": "cutover/__main__.py",
    "proxy/cli.py": "cutover/cli.py",
    "proxy/run.py": "cutover/run.py",
    "proxy/demo.py": "cutover/demo.py",
    "proxy/ctl.py": "cutover/ctl.py",
    "proxy/clock.py": "core/clock.py",
    "proxy/db.py": "core/db.py",
    "proxy/errors.py": "core/errors.py",
    "proxy/bounded.py": "core/bounded.py",
    "proxy/config_model.py": "core/config_model.py",
    "proxy/shared_bucket.py": "core/buckets.py",
    "proxy/tasks.py": "core/tasks.py",
    "routing/storable.py": "core/storable.py",  # core/errors.py and alerts' pure rules use it
    "proxy/http1.py": "core/http1.py",  # the pure matchers of compat and parity use it
    "proxy/alerts.py": "alerts/intake.py",
    "proxy/alerts_config.py": "alerts/config.py",
    "proxy/llm.py": "alerts/llm.py",
    "routing/alerts.py": "alerts/model.py",
    "routing/alert_routes.py": "alerts/routes.py",
    "routing/classify.py": "alerts/classify.py",
    "routing/dedup.py": "alerts/dedup.py",
    "routing/filters.py": "alerts/filters.py",
    "routing/matchers.py": "alerts/matchers.py",
    "routing/webhook_formats.py": "alerts/webhook_formats.py",
    "proxy/canary.py": "canary/feature.py",
    "proxy/canary_admin.py": "canary/admin.py",
    "proxy/canary_config.py": "canary/config.py",
    "proxy/shared.py": "canary/shared.py",
    "proxy/events.py": "canary/events.py",
    "proxy/compat.py": "compat/feature.py",
    "proxy/compat_cli.py": "compat/cli.py",
    "proxy/compat_store.py": "compat/store.py",
    # tests follow their modules
    "tests/unit/routing/test_alert_routes.py": "tests/unit/alerts/test_alert_routes.py",
    "tests/unit/routing/test_classify.py": "tests/unit/alerts/test_classify.py",
    "tests/unit/routing/test_dedup.py": "tests/unit/alerts/test_dedup.py",
    "tests/unit/routing/test_filters.py": "tests/unit/alerts/test_filters.py",
    "tests/unit/routing/test_matchers.py": "tests/unit/alerts/test_matchers.py",
    "tests/unit/routing/test_webhook_formats.py": "tests/unit/alerts/test_webhook_formats.py",
    "tests/unit/proxy/test_alerts_config.py": "tests/unit/alerts/test_alerts_config.py",
    "tests/unit/routing/test_storable.py": "tests/unit/core/test_storable.py",
    "tests/unit/proxy/test_http1.py": "tests/unit/core/test_http1.py",
}

NEW_INITS = {
    "cutover/__init__.py": '"""cutover: a migration gateway '
    '(the package root and composition root)."""\n',
    "core/__init__.py": '"""The ground floor: what every other part stands on; '
    'imports nothing else of ours."""\n',
    "alerts/__init__.py": '"""Alert intake, classification, filters and alert routing."""\n',
    "canary/__init__.py": '"""Canary control: runtime weights, automated rollback, promotion."""\n',
    "tests/unit/alerts/__init__.py": "",
    "tests/unit/core/__init__.py": "",
}

# (old module, name) -> new module: names the hand-made commits move between modules.
NAME_MOVES: dict[tuple[str, str], str] = {}
_kit = (
    "ConfigError",
    "ConfigErrors",
    "format_errors",
    "Shown",
    "REDACTED",
    "NOTHING",
    "is_secret",
    "redact_url",
    "shown",
    "Invalid",
    "Env",
    "Bad",
    "BAD",
    "Ctx",
    "Parser",
    "join",
    "did_you_mean",
    "section",
    "run",
    "field",
    "require",
    "items",
    "is_off",
    "TOKEN",
    "NAME_RE",
    "NUMBER",
    "HOSTNAME",
    "CONTROL",
    "string",
    "boolean",
    "int_of",
    "integer",
    "float_of",
    "number",
    "seconds_of",
    "duration",
    "bytes_of",
    "size",
    "fmt_seconds",
    "valid_host",
    "address",
    "optional_address",
    "is_loopback",
    "header_name",
    "optional_header_name",
    "method",
    "methods",
    "status",
    "statuses",
    "url_path",
    "regex",
    "file",
    "secret",
    "name",
    "known_backend",
    "url",
    "optional",
    "interpolate",
    "Loader",
    "yaml_error",
    "MAX_DEPTH",
    "MAX_VALUES",
)
for _name in _kit:
    NAME_MOVES[("cutover.proxy.config", _name)] = "cutover.core.configkit"
for _name in ("start_gateway", "FEATURES"):
    NAME_MOVES[("cutover.proxy.server", _name)] = "cutover.app"
    NAME_MOVES[("cutover.proxy.features", _name)] = "cutover.app"
for _name in ("Feature",):
    NAME_MOVES[("cutover.proxy.features", _name)] = "cutover.proxy.host"
for _name in ("RequestRecord",):
    NAME_MOVES[("cutover.proxy.server", _name)] = "cutover.proxy.host"
NAME_MOVES[("cutover.proxy.server", "ProxyOutcome")] = "cutover.proxy.attempts"
NAME_MOVES[("cutover.canary.feature", "Conflict")] = "cutover.canary.shared"
for _name in ("Exchange", "ParityRun", "EXAMPLES_PER_FIELD"):
    NAME_MOVES[("cutover.parity.runner", _name)] = "cutover.parity.results"
NAME_MOVES[("cutover.alerts.webhook_formats", "format_rfc3339")] = "cutover.core.clock"
for _name in ("CutoverConfig",):
    NAME_MOVES[("cutover.core.config_model", _name)] = "cutover.proxy.config"
for _name in ("TokenBucket",):
    NAME_MOVES[("cutover.publishing.limits", _name)] = "cutover.core.buckets"
for _name in ("CircuitBreaker", "BreakerState"):
    NAME_MOVES[("cutover.publishing.limits", _name)] = "cutover.core.breaker"
    NAME_MOVES[("cutover.alerts.llm", _name)] = "cutover.core.breaker"
NAME_MOVES[("cutover.publishing.limits", "backoff")] = "cutover.core.backoff"
# renamed names: (old module, old name) -> (new module, new name)
NAME_RENAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("cutover.proxy.config", "_UNFORESEEN"): ("cutover.core.configkit", "UNFORESEEN"),
    ("cutover.proxy.server", "Outcome"): ("cutover.proxy.server", "ProxyOutcome"),
    ("cutover.routing.canary", "Outcome"): ("cutover.routing.canary", "CommandOutcome"),
    ("cutover.publishing.transport", "Outcome"): ("cutover.publishing.transport", "SendOutcome"),
}

TEXT_SUFFIXES = (".md", ".toml", ".txt", ".yaml", ".yml", ".cfg", ".ini", ".tpl")
SKIP_DIRS = {".git", "tools", "__pycache__", "node_modules", ".venv", "build", "dist"}


# ---------------------------------------------------------------------------------------------
# the module map


def _module_of(path: str) -> str:
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _new_module_of(path: str) -> str:
    """The import name of a file in the new layout."""
    parts = _module_of(path).split(".")
    if parts[0] == PACKAGE:
        return ".".join(parts)
    if parts[0] == "tests":
        return ".".join(parts)
    return ".".join([PACKAGE, *parts])


MODULE_MAP: dict[str, str] = {_module_of(o): _new_module_of(n) for o, n in FILE_MOVES.items()}
MODULE_MAP["proxy"] = "cutover.proxy"  # the package itself (its __main__ moved to cutover/)
MOVED_PACKAGES_MAIN = {"proxy": "cutover"}  # `python -m proxy` -> `python -m cutover`


def _old_modules() -> set[str]:
    """Every old module name: those the map names plus those still in old folders."""
    found = set(MODULE_MAP)
    for top in OLD_TOP:
        base = ROOT / top
        if not base.is_dir():
            continue
        for p in base.rglob("*.py"):
            found.add(_module_of(p.relative_to(ROOT).as_posix()))
    return found


OLD_MODULES: set[str] = set()


def new_name(dotted: str, *, attrs: bool = True) -> str | None:
    """The new dotted name for an old one (module, or module + attributes); None: not ours."""
    parts = dotted.split(".")
    if parts[0] not in OLD_TOP:
        return None
    for i in range(len(parts), 0, -1):
        mod = ".".join(parts[:i])
        rest = parts[i:]
        if mod in MODULE_MAP or mod in OLD_MODULES:
            if rest and (not attrs or len(rest) > 1):
                return None  # `publishing.delivery.completions`: a config key, not a name
            if rest and _is_package(mod) and not _defined_in_init(mod, rest[0]):
                return None  # "parity.yaml", "nginx.conf": not a module path
            if rest and not _is_package(mod) and rest[0] not in _names_of_old(mod):
                return None
            new = MODULE_MAP.get(mod, f"{PACKAGE}.{mod}")
            return ".".join([new, *rest])
    return None


def _names_of_old(mod: str) -> set[str]:
    """Top-level names of an old module, wherever its file is now."""
    rel = mod.replace(".", "/") + ".py"
    for cand in (FILE_MOVES.get(rel), rel):
        if cand is not None and (ROOT / cand).exists():
            return _top_level_names((ROOT / cand).read_text())
    return set()


def _is_package(mod: str) -> bool:
    return mod in OLD_TOP or (ROOT / mod.replace(".", "/") / "__init__.py").exists()


def _defined_in_init(mod: str, name: str) -> bool:
    if (ROOT / mod.replace(".", "/") / f"{name}.py").exists():
        return True
    for old, _new in FILE_MOVES.items():
        if _module_of(old) == f"{mod}.{name}":
            return True
    init = ROOT / mod.replace(".", "/") / "__init__.py"
    return init.exists() and name in _top_level_names(init.read_text())


def _top_level_names(source: str, *, imports: bool = True) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
                elif isinstance(t, ast.Tuple):
                    names.update(e.id for e in t.elts if isinstance(e, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif imports and isinstance(node, ast.Import | ast.ImportFrom):
            for a in node.names:
                names.add(a.asname or a.name.split(".")[0])
    return names


# ---------------------------------------------------------------------------------------------
# files


def run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, check=check, text=True, capture_output=True)


def move_files(dry: bool) -> list[str]:
    done = []
    for rel, text in NEW_INITS.items():
        p = ROOT / rel
        if not p.exists():
            done.append(f"create {rel}")
            if not dry:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
                run(["git", "add", rel])
    for old, new in FILE_MOVES.items():
        src, dst = ROOT / old, ROOT / new
        if src.exists() and not dst.exists():
            done.append(f"git mv {old} {new}")
            if not dry:
                dst.parent.mkdir(parents=True, exist_ok=True)
                run(["git", "mv", old, new])
    return done


def repo_files() -> list[Path]:
    out = run(["git", "ls-files", "-co", "--exclude-standard"]).stdout.split("\n")
    files = []
    for rel in out:
        if not rel or any(part in SKIP_DIRS for part in Path(rel).parts):
            continue
        p = ROOT / rel
        if p.is_file():
            files.append(p)
    return files


# ---------------------------------------------------------------------------------------------
# rewriting python: imports (AST), strings and comments (tokens)

_DOTTED = re.compile(
    r"(?<![\w./\-`'\"])(?P<name>(?:" + "|".join(OLD_TOP) + r")(?:\.[A-Za-z_]\w*)+)"
    r"(?P<colon>:[A-Za-z_]\w*)?(?![\w/])"
)
_DOTTED_QUOTED = re.compile(
    r"(?P<q>[`'\"])(?P<name>(?:" + "|".join(OLD_TOP) + r")(?:\.[A-Za-z_]\w*)+)"
    r"(?P<colon>:[A-Za-z_]\w*)?(?P=q)"
)
_DASH_M = re.compile(r"(-m[\"']?,?\s*[\"']?)(?P<mod>proxy)(?=[\"'\s`)]|$)", re.M)


def _prose(new: str) -> str:
    """In prose a module goes by its folder: `canary.shared`, `cutover.cli`."""
    parts = new.split(".")
    if len(parts) > 2 and parts[0] == PACKAGE and parts[1] in (*OLD_TOP, *NEW_TOP):
        return ".".join(parts[1:])
    return new


def _sub_dotted(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        new = new_name(m.group("name"))
        if new is None:
            return m.group(0)
        quoted = m.group(0)[:1] in "'\"" and m.group(0)[-1:] in "'\""
        before = text[: m.start()]
        code = re.search(r"-[mp]\s+[`'\"]?$", before) or re.search(r"\b(?:from|import)\s+$", before)
        if not quoted and not code:
            # a string in code, a command (`-m …`) or an import statement (a `python -c` in a
            # doc) needs the import name
            new = _prose(new)
        return m.group(0).replace(m.group("name"), new, 1)

    text = _DOTTED_QUOTED.sub(one, text)
    return _DOTTED.sub(one, text)


def _sub_paths(text: str) -> str:
    for old, new in FILE_MOVES.items():
        if old.startswith("tests/"):
            continue
        text = re.sub(r"(?<![\w/])" + re.escape(old) + r"(?![\w])", new, text)
    return text


def _sub_dash_m(text: str) -> str:
    return _DASH_M.sub(lambda m: m.group(1) + MOVED_PACKAGES_MAIN[m.group("mod")], text)


def rewrite_text(text: str) -> str:
    """Docs and other text: dotted module names, `-m proxy`, moved file paths."""
    text = _sub_dash_m(text)
    text = _sub_paths(text)
    return _sub_dotted(text)


def _import_text(node: ast.Import | ast.ImportFrom, indent: str) -> str | None:
    """The statement with new module names, or None when it names none of ours."""
    if isinstance(node, ast.Import):
        changed = False
        parts = []
        for a in node.names:
            new = new_name(a.name, attrs=False)
            if new is None:
                parts.append(a.name + (f" as {a.asname}" if a.asname else ""))
                continue
            changed = True
            if a.asname is None and new != a.name:
                # `import proxy.config` binds `proxy`: keep the binding working
                parts.append(f"{new} as {a.name.split('.')[-1]}")
            else:
                parts.append(new + (f" as {a.asname}" if a.asname else ""))
        return f"{indent}import {', '.join(parts)}" if changed else None
    if node.level or node.module is None:
        return None
    module = node.module
    new_mod = new_name(module, attrs=False)
    if new_mod is None:
        return None
    # `from proxy import canary`: a submodule that moved elsewhere
    groups: dict[str, list[str]] = {}
    for a in node.names:
        sub = f"{module}.{a.name}"
        if sub in MODULE_MAP:
            target = MODULE_MAP[sub]
            parent, _, leaf = target.rpartition(".")
            alias = a.asname or a.name
            groups.setdefault(parent, []).append(leaf if leaf == alias else f"{leaf} as {alias}")
        else:
            groups.setdefault(new_mod, []).append(a.name + (f" as {a.asname}" if a.asname else ""))
    return "\n".join(_from_line(indent, mod, names) for mod, names in groups.items())


def _from_line(indent: str, module: str, names: list[str]) -> str:
    line = f"{indent}from {module} import {', '.join(names)}"
    if len(line) <= 100:
        return line
    inner = "".join(f"{indent}    {n},\n" for n in names)
    return f"{indent}from {module} import (\n{inner}{indent})"


def _replace_nodes(source: str, edits: list[tuple[int, int, int, int, str]]) -> str:
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    data = source.encode()
    for l1, c1, l2, c2, text in sorted(edits, reverse=True):
        start = offsets[l1 - 1] + c1
        end = offsets[l2 - 1] + c2
        data = data[:start] + text.encode() + data[end:]
    return data.decode()


def rewrite_imports(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            text = _import_text(node, "")
            if text is None:
                continue
            indent = " " * node.col_offset
            text = text.replace("\n", "\n" + indent)
            edits.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, text))  # type: ignore[arg-type]
    return _replace_nodes(source, edits) if edits else source


def rewrite_tokens(source: str) -> str:
    """Strings, docstrings and comments: dotted module names, `-m proxy`, moved paths."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return source
    edits = []
    for tok in tokens:
        if tok.type not in (tokenize.STRING, tokenize.COMMENT):
            continue
        text = tok.string
        new = _sub_string_token(text) if tok.type == tokenize.STRING else rewrite_text(text)
        if new != tok.string:
            (l1, c1), (l2, c2) = tok.start, tok.end
            edits.append((l1, c1, l2, c2, new))
    if not edits:
        return source
    lines = source.splitlines(keepends=True)
    for l1, c1, l2, c2, text in sorted(edits, reverse=True):
        before = lines[l1 - 1][:c1]
        after = lines[l2 - 1][c2:]
        lines[l1 - 1 : l2] = [before + text + after]
    return "".join(lines)


_WHOLE = re.compile(r"(?P<pre>[rbfuRBFU]*(?P<q>'''|\"\"\"|'|\"))(?P<body>[\s\S]*)(?P=q)$")


def _sub_string_token(token: str) -> str:
    m = _WHOLE.match(token)
    if m is None:
        return token
    body = m.group("body")
    if m.group("q") in ("'", '"'):
        whole = re.fullmatch(
            r"(?P<name>(?:" + "|".join(OLD_TOP) + r")(?:\.[A-Za-z_]\w*)*)(?P<colon>:[A-Za-z_]\w*)?",
            body,
        )
        if whole is not None:
            if "." not in whole.group("name"):
                return token  # a bare folder name: only after `-m` (below) or `files(…)`
            new = new_name(whole.group("name"))
            if new is not None:
                return token.replace(whole.group("name"), new, 1)
            return token
    new_body = rewrite_text(body)
    return token if new_body == body else token.replace(body, new_body, 1)


def rewrite_special(source: str) -> str:
    # `[sys.executable, "-m", "proxy", ...]`
    source = re.sub(r"([\"']-m[\"'],\s*)([\"'])proxy\2", r"\1\2cutover\2", source)
    # importlib.resources.files("examples")
    source = re.sub(
        r"files\(([\"'])(" + "|".join(OLD_TOP) + r")\1\)", r'files("cutover.\2")', source
    )
    return source


def rewrite_python(path: Path) -> bool:
    source = path.read_text()
    new = rewrite_imports(source)
    new = rewrite_tokens(new)
    new = rewrite_special(new)
    new = rename_names(new)
    if new != source:
        path.write_text(new)
        return True
    return False


# ---------------------------------------------------------------------------------------------
# names that moved between modules (second half)

_DEFINED: dict[str, set[str]] = {}


def _defines(module: str, name: str) -> bool:
    if module not in _DEFINED:
        path = _path_of_new(module)
        # definitions only: a name a module merely imports is not its to give away or take
        text = path.read_text() if path is not None else ""
        _DEFINED[module] = _top_level_names(text, imports=False)
    return name in _DEFINED[module]


def _path_of_new(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    rel = parts[1:]
    if not rel:
        cands = [ROOT / PACKAGE / "__init__.py"]
    elif rel[0] in OLD_TOP or rel[0] in NEW_TOP:
        cands = [ROOT / "/".join(rel) / "__init__.py", ROOT / ("/".join(rel) + ".py")]
    else:
        cands = [
            ROOT / PACKAGE / ("/".join(rel) + ".py"),
            ROOT / PACKAGE / "/".join(rel) / "__init__.py",
        ]
    return next((c for c in cands if c.exists()), None)


def _moved(module: str, name: str) -> tuple[str, str] | None:
    if (module, name) in NAME_RENAMES:
        new_mod, new = NAME_RENAMES[(module, name)]
        if _defines(new_mod, new) and not _defines(module, name):
            return new_mod, new
    target = NAME_MOVES.get((module, name))
    if target is not None and _defines(target, name) and not _defines(module, name):
        return target, name
    return None


def rename_names(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level or node.module is None:
            continue
        groups: dict[str, list[str]] = {}
        changed = False
        for a in node.names:
            moved = _moved(node.module, a.name)
            if moved is None:
                groups.setdefault(node.module, []).append(
                    a.name + (f" as {a.asname}" if a.asname else "")
                )
                continue
            changed = True
            mod, new = moved
            # a file that still says the old name keeps working under it
            alias = a.asname or (a.name if new != a.name else None)
            groups.setdefault(mod, []).append(new + (f" as {alias}" if alias else ""))
        if not changed:
            continue
        indent = " " * node.col_offset
        text = "\n".join(_from_line(indent, mod, names) for mod, names in groups.items())
        text = text[len(indent) :]  # the statement starts at the node's column
        edits.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, text))
    source = _replace_nodes(source, edits) if edits else source
    # dotted strings: "cutover.proxy.server.start_gateway" / "cutover.proxy.config:X"
    for (mod, name), target in NAME_MOVES.items():
        if _moved(mod, name) is not None:
            source = re.sub(
                re.escape(mod) + r"([.:])" + re.escape(name) + r"\b", target + r"\1" + name, source
            )
    return source


# ---------------------------------------------------------------------------------------------
# pyproject and .ci/run


def _packages() -> list[tuple[str, str]]:
    """(package, folder) for every package folder of the new layout."""
    out = []
    for top in (PACKAGE, *NEW_TOP, *OLD_TOP):
        base = ROOT / top
        if not (base / "__init__.py").exists():
            continue
        for init in sorted(base.rglob("__init__.py")):
            folder = init.parent.relative_to(ROOT).as_posix()
            parts = folder.split("/")
            pkg = ".".join(parts) if top == PACKAGE else ".".join([PACKAGE, *parts])
            out.append((pkg, folder))
    return out


def rewrite_pyproject(text: str) -> str:
    pkgs = _packages()
    block = "[tool.setuptools]\n"
    block += "packages = [\n" + "".join(f'    "{p}",\n' for p, _ in pkgs) + "]\n\n"
    block += "[tool.setuptools.package-dir]\n"
    block += "".join(f'"{p}" = "{f}"\n' for p, f in pkgs if p.count(".") <= 1)
    text = re.sub(
        r"\[tool\.setuptools\]\n(?:packages = \[[^\]]*\]\n)"
        r"(?:\n\[tool\.setuptools\.package-dir\]\n(?:\"[^\n]*\n)*)?",
        block,
        text,
    )

    # package data: `examples = [...]` -> `"cutover.examples" = [...]`
    def data(m: re.Match[str]) -> str:
        lines = []
        for line in m.group(2).splitlines(keepends=True):
            k = re.match(r"(\w+)( = .*\n?)", line)
            if k and k.group(1) in OLD_TOP + NEW_TOP:
                line = f'"{PACKAGE}.{k.group(1)}"{k.group(2)}'
            lines.append(line)
        return m.group(1) + "".join(lines)

    text = re.sub(r"(\[tool\.setuptools\.package-data\]\n)((?:[^\[\n][^\n]*\n?)*)", data, text)
    text = re.sub(r'\npythonpath = \["\."\]', "", text)
    if "known-first-party" not in text:
        text = text.rstrip("\n") + (
            '\n\n[tool.ruff.lint.isort]\nknown-first-party = ["cutover", "tests"]\n'
        )
    return rewrite_text(text)


def rewrite_ci(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        names = [n.strip() for n in m.group(1).split(",")]
        names = [f"{PACKAGE}.{n}" if n in OLD_TOP else n for n in names]
        return f'import {", ".join(names)}"'

    text = re.sub(r"import ([\w, .]+)\"", one, text)
    return rewrite_text(text)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    global ROOT, OLD_MODULES
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--no-format", action="store_true", help="skip ruff (import order, format)")
    args = p.parse_args()
    ROOT = Path(run(["git", "rev-parse", "--show-toplevel"]).stdout.strip())
    OLD_MODULES = _old_modules()  # before the moves: names as they were
    for line in move_files(args.dry_run):
        print(line)
    changed: list[Path] = []
    for path in repo_files():
        rel = path.relative_to(ROOT).as_posix()
        if path.suffix == ".py":
            if args.dry_run:
                continue
            if rewrite_python(path):
                changed.append(path)
        elif rel == "pyproject.toml":
            text = path.read_text()
            new = rewrite_pyproject(text)
            if new != text and not args.dry_run:
                path.write_text(new)
                changed.append(path)
        elif rel == ".ci/run":
            text = path.read_text()
            new = rewrite_ci(text)
            if new != text and not args.dry_run:
                path.write_text(new)
                changed.append(path)
        elif path.suffix in TEXT_SUFFIXES or path.name in ("Dockerfile",):
            text = path.read_text(errors="surrogateescape")
            new = rewrite_text(text)
            if new != text and not args.dry_run:
                path.write_text(new, errors="surrogateescape")
                changed.append(path)
    for path in changed:
        print("rewrote", path.relative_to(ROOT))
    py = [str(p.relative_to(ROOT)) for p in changed if p.suffix == ".py"]
    if py and not args.no_format and not args.dry_run:
        for cmd in (["check", "--fix", "--select", "I"], ["format"]):
            done = run([sys.executable, "-m", "ruff", *cmd, *py], check=False)
            if done.returncode not in (0, 1):
                print("ruff", *cmd, "failed:", done.stderr.strip(), file=sys.stderr)
    if not args.dry_run:
        run(["git", "add", "-A", "--", *_tracked_roots()], check=False)
    return 0


def _tracked_roots() -> list[str]:
    return [t for t in (*OLD_TOP, *NEW_TOP, PACKAGE, "tests", "docs") if (ROOT / t).exists()] + [
        f
        for f in ("README.md", "BENCHMARKS.md", "pyproject.toml", ".ci/run")
        if (ROOT / f).exists()
    ]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
