"""Property-based fuzzing of the config loader: whatever the file or the data holds, checking it
gives a config or `ConfigErrors` — one line per problem, each naming the file and where — and
nothing else: no other exception, and no error from the loader's safety net (a parser that
failed in a way it did not foresee is a bug, even when it is reported politely).

Seeds: a config that uses every section and key (`full-config.yaml`) and the demo config.
Mutations: of the data (values of other types and shapes, keys that are not strings, YAML's
dates, binary, infinities, deep nesting), and of the YAML text (lines dropped, doubled, moved
or re-indented, YAML syntax spliced in: anchors, aliases, tags, merge keys, flow collections).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from cutover.core import configkit as kit
from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import CutoverConfig, load_config, parse_config
from tests.conftest import ROOT
from tests.fuzzing import fuzz, nested, text

HERE = Path(__file__).parent
FULL_TEXT = (HERE / "full-config.yaml").read_text()
DEMO_TEXT = (ROOT / "examples" / "demo.yaml").read_text()
ENV = {"CUTOVER_ADMIN_TOKEN": "admin-token-0123456789"}
SEEDS = [yaml.safe_load(FULL_TEXT), yaml.safe_load(DEMO_TEXT)]


def check(outcome: object) -> list[kit.ConfigError]:
    """The errors of a check that gave `ConfigErrors` ([] for a config), after asserting what
    every error must be."""
    if isinstance(outcome, CutoverConfig):
        return []
    assert isinstance(outcome, ConfigErrors), outcome
    assert outcome.errors
    for error in outcome.errors:
        line = str(error)
        assert "\n" not in line and line.startswith(error.file), line
        assert isinstance(error.path, str), error
        assert kit.UNFORESEEN not in line, line  # the safety net caught a parser bug
    return outcome.errors


def outcome_of(run: Any) -> object:
    try:
        return run()
    except ConfigErrors as errs:
        return errs


def test_the_seeds_are_valid() -> None:
    for data in SEEDS:
        parse_config(data, str(HERE / "seed.yaml"), env=ENV)


# -- mutated data -------------------------------------------------------------------------

# Words the config gives meaning to, in any place.
CONFIG_WORDS = (
    "5s", "0", "-1s", "1e400", "10MiB", "0B", "${X}", "${", "$${X}", "${X:-}", "off", "on", "none",
    "cookie", "client_ip", "builtin:alert-history", "builtin:nope", "http://h:1", "https://",
    "redis://r", "sqlite://", "127.0.0.1:0", "[::1]:99999", "^(", "*", "/", "GET", "go", "python",
    "default", "webhook", "api", "normal", "ramp", "rules", "openai",
)  # fmt: skip
# What YAML can put in a value: every scalar type (dates, binary, infinities included).
YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # nan and inf: YAML writes .nan and .inf
    text(),
    st.sampled_from(CONFIG_WORDS),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=8),
)
KEYS = st.one_of(text(), st.integers(-5, 5), st.booleans(), st.none(), st.floats(), st.dates())
VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=10,
)
SMALL_VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=4,
)
OPS = st.sampled_from(["replace", "scalar", "delete", "insert", "key", "wrap", "dup", "deep"])
DEPTHS = st.sampled_from([5, 70, 300])


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The places of `doc` down to 50 levels (deeper ones are there to be refused)."""
    out = [path]
    if len(path) >= 50:
        return out
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*path, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc


@st.composite
def mutated_data(draw: st.DrawFn) -> Any:
    doc = _copy(draw(st.sampled_from(SEEDS)))
    deep_left = 2  # 2 x 300 levels at most: walking the document recurses, as the parser does
    for _ in range(draw(st.integers(1, 5))):
        places = _paths(doc)
        path = places[draw(st.integers(0, len(places) - 1))]
        here = _get(doc, path)
        op = draw(OPS)
        if op == "replace":
            doc = _set(doc, path, draw(VALUES))
        elif op == "scalar":
            doc = _set(doc, path, draw(YAML_SCALARS))
        elif op == "delete" and path:
            del _get(doc, path[:-1])[path[-1]]
        elif op == "insert" and isinstance(here, dict):
            here[draw(KEYS)] = draw(SMALL_VALUES)
        elif op == "insert" and isinstance(here, list):
            here.insert(draw(st.integers(0, len(here))), draw(SMALL_VALUES))
        elif op == "key" and isinstance(here, dict) and here:
            key = draw(st.sampled_from(list(here)))
            here[draw(KEYS)] = here.pop(key)
        elif op == "wrap":
            doc = _set(doc, path, draw(st.sampled_from([[here], {"x": here}, str(here)])))
        elif op == "dup" and isinstance(here, list) and here:
            here.append(_copy(here[-1]))
        elif op == "deep" and deep_left > 0:
            deep_left -= 1
            doc = _set(
                doc, path, nested(here, draw(DEPTHS), draw(st.sampled_from(["list", "dict"])))
            )
    return doc


@fuzz(600)
@given(data=mutated_data())
def test_fuzz_config_data_gives_a_config_or_errors(data: Any) -> None:
    check(outcome_of(lambda: parse_config(data, "/etc/cutover/fuzz.yaml", env=ENV)))


# -- mutated YAML text ----------------------------------------------------------------------

SNIPPETS = (
    "&a", "*a", "*nowhere", "&a [*a]", "!!python/object/apply:os.system ['true']", "!!binary aGk=",
    "!!set {a, b}", "!!bool maybe", "!!timestamp 2025-13-45", "!!float abc", "!!omap [a: 1]",
    "!!str", "!!int x", "!!float .nan", "? [a, b]\n: c",
    "<<: *a", "<<: [1]", "{a: 1, a: 2}", ".inf", "-.inf", ".nan", "0x1F", "0o17", "1_000",
    "2025-06-01", "2025-06-01T00:00:00Z", "~", "null", "yes", "on", "'quoted'", '"\\x00"',
    '"\\ud800"', "[" * 80 + "]" * 80, "{a: " * 80 + "1" + "}" * 80, "%YAML 1.1", "---", "...",
    "|\n  block", ">-\n  folded", "- - - x", "a: b: c", "\t", "#", "@", "`", "${X}", "${",
    "- &r {x: 1}\n- *r", "x: &l [1, 2]\ny: *l",
)  # fmt: skip
LINE_OPS = st.sampled_from(["drop", "double", "move", "indent", "splice", "chars", "truncate"])
SPECIAL = st.text(alphabet=":{}[],&*!|>'\"%@`#-? \t\n\\", min_size=1, max_size=6)


@st.composite
def mutated_yaml(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from([FULL_TEXT, DEMO_TEXT])).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(LINE_OPS)
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "double":
            lines.insert(i, lines[i])
        elif op == "move":
            lines.insert(draw(st.integers(0, len(lines) - 1)), lines.pop(i))
        elif op == "indent":
            spaces = draw(st.sampled_from(["", " ", "  ", "    ", "\t"]))
            lines[i] = spaces + lines[i].lstrip(" ") if draw(st.booleans()) else spaces + lines[i]
        elif op == "splice":
            snippet = draw(st.sampled_from(SNIPPETS))
            head, sep, _ = lines[i].partition(": ")
            lines[i] = f"{head}: {snippet}" if sep and draw(st.booleans()) else snippet
        elif op == "chars":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(SPECIAL) + lines[i][at:]
        elif op == "truncate":
            lines = lines[: i + 1]
    return "\n".join(lines) + "\n"


@fuzz(500)
@given(text_=mutated_yaml())
def test_fuzz_config_yaml_gives_a_config_or_errors(tmp_path: Path, text_: str) -> None:
    path = tmp_path / "cutover.yaml"
    path.write_text(text_, encoding="utf-8")
    errors = check(outcome_of(lambda: load_config(path)))
    assert all(e.file == str(path) or e.file.startswith("builtin:") for e in errors)


def test_the_yaml_mutations_leave_valid_files_sometimes_and_break_them_often() -> None:
    """The text mutations are neither all harmless nor all syntax errors (checked on a sample),
    so the parsers behind the YAML reader get exercised too."""
    seen = {"config": 0, "yaml": 0, "checks": 0}

    @fuzz(150)
    @given(text_=mutated_yaml())
    def sample(text_: str) -> None:
        loader = kit.Loader(text_)
        try:
            data = loader.load()
        except yaml.YAMLError:
            seen["yaml"] += 1
            return
        finally:
            loader.dispose()
        outcome = outcome_of(lambda: parse_config(data, "x.yaml", env=ENV))
        seen["config" if isinstance(outcome, CutoverConfig) else "checks"] += 1

    sample()
    assert seen["yaml"] and seen["checks"] and seen["config"], seen
