"""The parity: section, a route's mirror.methods and capture:, and --config files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cutover.core.config_model import DEFAULT_CAPTURE_REDACT, IDEMPOTENT_METHODS
from cutover.core.configkit import ConfigErrors
from cutover.parity.config import MirrorSettings, ParityConfig, load_parity_file
from cutover.proxy.config import parse_config


def config(parity: Any = None, route: dict[str, Any] | None = None, source: str = "c.yaml"):  # type: ignore[no-untyped-def]
    data: dict[str, Any] = {
        "backends": {"py": "http://127.0.0.1:1", "go": "http://127.0.0.1:2"},
        "routes": [{"name": "r", "split": {"py": 100}, **(route or {})}],
    }
    if parity is not None:
        data["parity"] = parity
    return parse_config(data, source)


def errors(**kwargs: Any) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        config(**kwargs)
    return [f"{e.path}: {e.expected}" for e in info.value.errors]


def test_defaults() -> None:
    assert config().parity is None
    section = config(parity={}).parity
    assert section == ParityConfig()
    assert section.rules.headers == ("content-type",)
    assert section.mirror == MirrorSettings(queue=1000, workers=4, timeout=10.0)


def test_full_section() -> None:
    section = config(
        parity={
            "ignore": ["$..request_id", "header.date"],
            "tolerances": [{"path": "$.ms", "numeric": 0.5}, {"path": "$.at", "timestamp": "2s"}],
            "array_keys": {"$.alerts": "fingerprint"},
            "unordered": ["$.tags"],
            "headers": ["Content-Type", "X-Enrichment-Mode"],
            "thresholds": {"relative": 10, "absolute": 1},
            "endpoints": ["/silences/{name}"],
            "mirror": {"queue": 5, "workers": 1, "timeout": "1s", "max_body": "64KiB"},
            "window": 50,
            "min_samples": 5,
        }
    ).parity
    assert [p.text for p in section.rules.ignore] == ["$..request_id", "header.date"]
    assert section.rules.tolerances[1].timestamp == 2.0
    assert section.rules.array_keys[0][1] == "fingerprint"
    assert section.rules.headers == ("content-type", "x-enrichment-mode")
    assert section.thresholds.relative == 10
    assert section.mirror == MirrorSettings(queue=5, workers=1, timeout=1.0, max_body=65536)
    assert (section.window, section.min_samples) == (50, 5)
    assert section.endpoints == ("/silences/{name}",)


def test_errors_name_the_key() -> None:
    found = errors(
        parity={
            "ignore": ["$.ok", "nope"],
            "tolerances": [{"path": "$.a", "numeric": 1, "timestamp": "1s"}, {"numeric": 1}],
            "array_keys": {"$.a": 3},
            "headers": ["bad header"],
            "thresholds": {"relative": 101},
            "endpoints": ["alerts"],
            "mirror": {"queue": 0, "noise": "maybe"},
            "windw": 3,
        }
    )
    assert found == [
        "parity.windw: a known key (did you mean 'window'?)",
        "parity.ignore[1]: a path starting with '$' (JSON body), or status, body, header.NAME "
        "(got 'nope')",
        "parity.tolerances[0]: exactly one of numeric (an epsilon) or timestamp (a duration)",
        "parity.tolerances[1].path: a path such as $..duration (this key is required)",
        "parity.array_keys['$.a']: an item key name (a string)",
        "parity.headers[0]: a header name (letters, digits and !#$%&'*+-.^_`|~)",
        "parity.thresholds.relative: a number >= 0 and <= 100",
        "parity.endpoints[0]: a path template starting with '/', such as /alerts/{id}",
        "parity.mirror.queue: an integer from 1 to 1000000",
        "parity.mirror.noise: true or false",
    ]


def test_mirror_methods() -> None:
    route = config(route={"mirror": {"to": "go", "percent": 5}}).routes[0]
    assert route.mirror is not None and route.mirror.methods == IDEMPOTENT_METHODS
    route = config(route={"mirror": {"to": "go", "percent": 5, "methods": ["get", "POST"]}})
    assert route.routes[0].mirror.methods == frozenset({"GET", "POST"})
    assert errors(route={"mirror": {"to": "go", "percent": 5, "methods": []}}) == [
        "routes[0].mirror.methods: a list of HTTP methods such as [GET, HEAD]"
    ]


def test_capture(tmp_path: Path) -> None:
    source = str(tmp_path / "c.yaml")
    route = config(route={"capture": "corpus.jsonl"}, source=source).routes[0]
    assert route.capture is not None
    assert route.capture.file == str(tmp_path / "corpus.jsonl")
    assert route.capture.redact_headers == DEFAULT_CAPTURE_REDACT
    route = config(
        route={
            "capture": {
                "file": "c.jsonl",
                "percent": 10,
                "redact_headers": ["X-Secret"],
                "redact_fields": ["$..password"],
                "max_body": "1KiB",
            }
        },
        source=source,
    ).routes[0]
    assert route.capture is not None
    assert "x-secret" in route.capture.redact_headers and "cookie" in route.capture.redact_headers
    assert route.capture.redact_fields == ("$..password",)
    assert config(route={"capture": "off"}, source=source).routes[0].capture is None
    assert errors(
        route={"capture": {"file": "missing/c.jsonl", "redact_fields": ["x"], "percent": 0}},
        source=source,
    ) == [
        "routes[0].capture.file: a file in an existing folder",
        "routes[0].capture.redact_fields[0]: a path starting with '$' (JSON body), or status, "
        "body, header.NAME (got 'x')",
        "routes[0].capture.percent: a number > 0 and <= 100",
    ]


def test_parity_file(tmp_path: Path) -> None:
    whole = tmp_path / "cutover.yaml"
    whole.write_text("backends: {a: 'http://x'}\nparity:\n  ignore: [$.id]\n")
    assert [p.text for p in load_parity_file(whole).rules.ignore] == ["$.id"]
    alone = tmp_path / "rules.yaml"
    alone.write_text("ignore: [$.id]\nunordered: [$.tags]\n")
    assert [p.text for p in load_parity_file(alone).rules.unordered] == ["$.tags"]
    plain = tmp_path / "plain.yaml"
    plain.write_text("backends: {a: 'http://x'}\nroutes: []\n")
    assert load_parity_file(plain) == ParityConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("parity:\n  ignore: [x]\n")
    with pytest.raises(ConfigErrors, match=r"bad.yaml: parity.ignore\[0\]: expected a path"):
        load_parity_file(bad)


def test_parity_file_interpolates_the_environment_as_the_gateway_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARITY_WINDOW", "50")
    monkeypatch.delenv("PARITY_UNSET", raising=False)
    whole = tmp_path / "cutover.yaml"
    whole.write_text(
        "backends: {a: 'http://x'}\nroutes: []\nparity:\n  window: ${PARITY_WINDOW:-1000}\n"
        "  min_samples: ${PARITY_MIN:-200}\n  ignore: ['${IGNORED:-$.id}']\n"
    )
    config = load_parity_file(whole)
    assert (config.window, config.min_samples) == (50, 200)
    assert [p.text for p in config.rules.ignore] == ["$.id"]
    whole.write_text("parity:\n  window: ${PARITY_UNSET}\n")
    with pytest.raises(ConfigErrors, match=r"parity\.window: expected environment variable"):
        load_parity_file(whole)


def test_mirror_shed_lag() -> None:
    assert MirrorSettings().shed_lag == 0.005
    for given, seconds in (("50ms", 0.05), ("off", 0.0), (0, 0.0), ("1s", 1.0)):
        section = config(parity={"mirror": {"shed_lag": given}}).parity
        assert section is not None and section.mirror.shed_lag == seconds, given


@pytest.mark.parametrize("bad", ["soon", -1, "11s", [20]])
def test_mirror_shed_lag_rejects_with_the_key_path(bad: object) -> None:
    assert errors(parity={"mirror": {"shed_lag": bad}}) == [
        "parity.mirror.shed_lag: a duration from 0 to 10s (e.g. 5ms), or off"
    ]


def test_mirror_cpu() -> None:
    assert MirrorSettings().cpu == 0.0  # off: whatever idle CPU the mirror process gets
    for given, share in (("10%", 0.1), ("1%", 0.01), (25, 0.25), ("100%", 1.0), ("off", 0.0),
                         (None, 0.0), (False, 0.0)):  # fmt: skip
        section = config(parity={"mirror": {"cpu": given}}).parity
        assert section is not None and section.mirror.cpu == share, given


@pytest.mark.parametrize("bad", [0, "0%", "0.5%", -5, "101%", "a lot", True, "nan", [10]])
def test_mirror_cpu_rejects_with_the_key_path(bad: object) -> None:
    assert errors(parity={"mirror": {"cpu": bad}}) == [
        "parity.mirror.cpu: a percentage of one CPU from 1 to 100 (e.g. 10%), or off"
    ]


@pytest.mark.parametrize("bad", ["101%", "nan", True, "x"])
def test_mirror_shed_wait_rejects_with_the_key_path(bad: object) -> None:
    assert errors(parity={"mirror": {"shed_wait": bad}}) == [
        "parity.mirror.shed_wait: a percentage from 0 to 100 (e.g. 20%), or off"
    ]
