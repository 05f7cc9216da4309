"""`compat:` section parsing: profile files, built-in profile, inline rules, key-path errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cutover.compat.config import CompatConfig, profile_resource
from cutover.compat.jsonops import Convert, Unwrap
from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import load_config, parse_config


def config(compat: Any) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "backends": {"go": {"url": "http://127.0.0.1:1"}, "python": {"url": "http://127.0.0.1:2"}},
        "routes": [{"name": "default", "match": {"path_prefix": "/"}, "split": {"go": 100}}],
        "compat": compat,
    }


def section(compat: Any, source: str = "cutover.yaml") -> CompatConfig:
    got = parse_config(config(compat), source).compat
    assert isinstance(got, CompatConfig)
    return got


def errors(compat: Any, source: str = "cutover.yaml") -> list[str]:
    with pytest.raises(ConfigErrors) as exc:
        parse_config(config(compat), source)
    return [str(e) for e in exc.value.errors]


def test_builtin_profile_loads() -> None:
    s = section({"profile": "builtin:alert-history", "backends": {"new": "go", "legacy": "python"}})
    assert [r.name for r in s.rules] == [
        "health", "legacy-removed", "history-by-fingerprint", "history", "webhook"
    ]  # fmt: skip
    assert s.roles == {"new": "go", "legacy": "python"}
    assert s.backend_role("go") == "new"
    history = s.rules[3]
    assert history.rewrite_for("new") is not None and history.rewrite_for("legacy") is None
    assert dict(history.headers)["Sunset"] == "Tue, 01 Apr 2025 00:00:00 GMT"
    assert "rules:" in profile_resource("alert-history")


def test_profile_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text(
        "deprecation: {sunset: 2030-01-01}\n"
        "rules:\n  - {name: old, match: {path: /old}, gone: {replacement: GET /new}}\n"
    )
    cfg = config({"profile": "profiles/p.yaml"})
    import yaml

    (tmp_path / "cutover.yaml").write_text(yaml.safe_dump(cfg))
    s = load_config(tmp_path / "cutover.yaml").compat
    assert isinstance(s, CompatConfig)
    assert s.rules[0].gone is not None and s.rules[0].gone.replacement == "GET /new"
    assert s.rules[0].sunset == 1893456000


def test_errors_in_a_profile_file_name_the_file_and_the_key_path(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "rules:\n"
        "  - name: a\n    match: {path: /a}\n"
        "  - name: b\n    match: {path: /b}\n"
        "    rewrite:\n      response:\n        body:\n          - {convert: {t: epok}}\n"
    )
    errs = errors({"profile": "p.yaml"}, str(tmp_path / "cutover.yaml"))
    assert errs[0] == (
        f"{profile}: rules[1].rewrite.response.body[0].convert.t: expected one of "
        "severity_name, severity_number, epoch, epoch_ms, rfc3339, string, integer, number, "
        "got 'epok'"
    )
    assert errs[1].startswith(f"{tmp_path / 'cutover.yaml'}: compat.profile: expected a valid")


def test_missing_profile_and_yaml_errors(tmp_path: Path) -> None:
    errs = errors({"profile": "nope.yaml"}, str(tmp_path / "c.yaml"))
    assert "compat.profile: expected a readable UTF-8 profile file" in errs[0]
    (tmp_path / "bad.yaml").write_text("rules: [\n")
    errs = errors({"profile": "bad.yaml"}, str(tmp_path / "c.yaml"))
    assert errs[0].startswith(f"{tmp_path / 'bad.yaml'}: line ")
    assert errors({"profile": "builtin:nope"})[0].endswith(
        "compat.profile: expected a built-in profile (alert-history), got 'builtin:nope'"
    )


def test_inline_rules_compile() -> None:
    s = section(
        {
            "backends": {"new": "go"},
            "caller": {"header": "X-API-Key"},
            "max_body": "64KiB",
            "usage": {"flush_interval": "1s"},
            "deprecation": {"since": "2025-02-01T00:00:00Z", "sunset": 1743465600},
            "rules": [
                {
                    "name": "item",
                    "match": {"method": "get", "path": "/alerts/{id}", "query": {"v": 1}},
                    "rewrite": {
                        "applies_to": "new",
                        "path": "/api/v2/alerts/{id}",
                        "query": [{"pagination": True}, {"rename": {"q": "filter"}}],
                        "response": {
                            "status": {404: 410, "400": 422},
                            "body": [
                                {"unwrap": "data"},
                                {"convert": {"severity": "severity_name"}},
                            ],
                        },
                    },
                }
            ],
        }
    )
    (rule,) = s.rules
    assert s.caller_header == "X-API-Key" and s.max_body == 65536 and s.flush_interval == 1.0
    assert rule.match.methods == frozenset({"GET"})
    assert rule.match.query[0].equals == "1"
    assert dict(rule.headers)["Deprecation"] == "@1738368000"
    rw = rule.rewrites[0]
    assert rw.response is not None and dict(rw.response.status_map) == {404: 410, 400: 422}
    assert rw.response.body == (Unwrap((), "data"), Convert(("severity",), "severity_name"))
    assert rw.target("/alerts/7", "offset=20&limit=10&q=x", {"id": "7"}) == (
        "/api/v2/alerts/7?filter=x&page=3&page_size=10"
    )


@pytest.mark.parametrize(
    ("compat", "expected"),
    [
        ({}, "compat: expected a 'profile' (file or builtin:NAME) and/or inline 'rules'"),
        ({"rules": [{"name": "a", "match": {"path": "/a"}, "rewrite": {"applies_to": "new"}}]},
         "compat.backends.new: expected the backend playing the role 'new' (rules a use it)"),
        ({"rules": [{"name": "a", "match": {"path": "/a"}, "keep_on_legacy": True}],
          "backends": {"legacy": "pyton"}},
         "compat.backends.legacy: expected a backend defined under backends (did you mean "
         "'python'?), got 'pyton'"),
        ({"rules": [{"name": "a", "match": {"path": "/a/{id}"}, "rewrite": {"path": "/b/{x}"}}]},
         "compat.rules[0].rewrite.path: expected only parameters of every match path"),
        ({"rules": [{"name": "a", "match": {"path": "/a"}, "gone": True, "fan_out": {}}]},
         "compat.rules[0]: expected either gone alone"),
        ({"rules": [{"name": "a", "match": {"path": "/a"}},
                    {"name": "a", "match": {"path": "/b"}}]},
         "compat.rules[1].name: expected a rule name used once"),
        ({"rules": [{"name": "a", "match": {"path": "/a", "query": {"x": []}}}]},
         "compat.rules[0].match.query.x: expected true (present), false (absent)"),
        ({"rules": [{"name": "a", "match": {"path": "/a"},
                     "rewrite": {"query": [{"rename": {"a": "b"}, "drop": "c"}]}}]},
         "compat.rules[0].rewrite.query[0]: expected a mapping with one operation"),
        ({"rules": [{"name": "a", "match": {"path": "/a"},
                     "deprecation": {"sunset": "soon"}}]},
         "compat.rules[0].deprecation.sunset: expected a date (2025-04-01)"),
        ({"rules": [{"name": "a", "match": {"path": "/a"}, "rewrite": {"body": [{"each": {}}]}}]},
         "compat.rules[0].rewrite.body[0].each.ops: expected the list of operations"),
        ({"rules": [{"name": "a", "match": {"path": "/a"}, "rewite": {}}]},
         "compat.rules[0].rewite: expected a known key (did you mean 'rewrite'?)"),
    ],
)  # fmt: skip
def test_errors_name_the_key_path(compat: Any, expected: str) -> None:
    errs = errors(compat)
    assert any(e.startswith(f"cutover.yaml: {expected}") for e in errs), errs


def fan_out_rule(**fan_out: Any) -> dict[str, Any]:
    return {
        "backends": {"new": "go"},
        "rules": [{"name": "ingest", "match": {"path": "/ingest"}, "fan_out": fan_out}],
    }


def test_fan_out_concurrency() -> None:
    (rule,) = section(fan_out_rule(items="alerts")).rules
    assert rule.fan_out is not None and rule.fan_out.concurrency == 1  # one after another
    (rule,) = section(fan_out_rule(concurrency=64)).rules
    assert rule.fan_out is not None and rule.fan_out.concurrency == 64


@pytest.mark.parametrize("value", [0, 65, -1, "four", True, 2.5])
def test_fan_out_concurrency_errors_name_the_key_and_the_range(value: object) -> None:
    shown = repr(value) if isinstance(value, str) else str(value)
    assert errors(fan_out_rule(concurrency=value)) == [
        "cutover.yaml: compat.rules[0].fan_out.concurrency: expected an integer from 1 to 64, "
        f"got {shown}"
    ]


def test_design_shorthand_and_profile_default_roles() -> None:
    # DESIGN.md writes `compat: examples/compat/alert-history.yaml`; backends go and python
    s = section(str(Path(__file__).resolve().parents[3] / "examples/compat/alert-history.yaml"))
    assert s.roles == {"new": "go", "legacy": "python"}
    assert len(s.rules) == 5


def test_profile_default_roles_need_the_backends() -> None:
    data = config({"profile": "builtin:alert-history"})
    data["backends"] = {"new": {"url": "http://127.0.0.1:1"}, "old": {"url": "http://127.0.0.1:2"}}
    data["routes"][0]["split"] = {"new": 100}
    with pytest.raises(ConfigErrors) as exc:
        parse_config(data, "cutover.yaml")
    paths = [e.path for e in exc.value.errors]
    assert paths == ["compat.backends.new", "compat.backends.legacy"]
    data["compat"]["backends"] = {"new": "new", "legacy": "old"}
    assert parse_config(data, "c.yaml").compat.roles == {"new": "new", "legacy": "old"}


def rewrite_rule(**rewrite: Any) -> dict[str, Any]:
    return {"rules": [{"name": "a", "match": {"path": "/a"}, "rewrite": rewrite}],
            "backends": {"new": "go"}}  # fmt: skip


def test_new_operations_compile() -> None:
    from cutover.compat import jsonops as J

    response = {
        "status": {204: 200},
        "fill": [{"status": [204, "2xx"], "body": {"status": "success"}},
                 {"status": "5xx", "when": ["empty", "not_json"],
                  "body": {"detail": "{text}", "code": "{status}"}}],
        "body": [
            {"empty_to_null": ["data.alerts", "data.silences"]},
            {"null_to_empty": "data.groups"},
            {"to_array": "data.alert"},
            {"time": {"data.created": {"digits": 3, "trim": True, "zone": "+00:00"},
                      "data.updated": None}},
            {"when": {"status": [200, "2xx"], "present": "data", "absent": ["error"],
                      "equals": {"data.kind": "list"}},
             "then": [{"unwrap": "data"}], "else": [{"set": {"wrapped": True}}]},
        ],
        "error_body": {404: [{"set": {".": {"detail": "Not Found"}}}],
                       "4xx": [{"rename": {"error": "detail"}}],
                       "default": [{"wrap": "error"}]},
    }  # fmt: skip
    got = section(rewrite_rule(applies_to="new", response=response))
    rt = got.rules[0].rewrites[0].response
    assert rt is not None
    assert rt.body[0] == J.EmptyToNull((("data", "alerts"), ("data", "silences")))
    assert rt.body[1] == J.NullToEmpty((("data", "groups"),))
    assert rt.body[2] == J.ToArray((("data", "alert"),))
    assert rt.body[3] == J.Time(("data", "created"), 3, True, "+00:00")
    assert rt.body[4] == J.Time(("data", "updated"), None, False, "Z")
    when = rt.body[5]
    assert isinstance(when, J.When) and when.condition.status == J.StatusSet(
        frozenset({200}), frozenset({2})
    )
    assert when.then == (J.Unwrap((), "data"),)
    assert [rt.ops_for(s)[0].name for s in (404, 400, 500)] == ["set", "rename", "wrap"]
    assert rt.fill_for(204, empty=True) is not None and rt.fill_for(503, empty=False) is not None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"body": [{"empty_to_nul": "x"}]},
         "body[0].empty_to_nul: expected a known operation (did you mean 'empty_to_null'?)"),
        ({"body": [{"to_array": []}]}, "body[0].to_array: expected a JSON path or a list"),
        ({"body": [{"null_to_empty": ["a..b"]}]},
         "body[0].null_to_empty[0]: expected a dotted JSON path"),
        ({"body": [{"time": {"t": {"digits": 12}}}]},
         "body[0].time.t.digits: expected an integer from 0 to 9, got 12"),
        ({"body": [{"time": {"t": {"zone": "UTC"}}}]},
         "body[0].time.t.zone: expected Z, +00:00 or keep, got 'UTC'"),
        ({"body": [{"time": {"t": {"precision": 3}}}]},
         "body[0].time.t.precision: expected a known key"),
        ({"body": [{"when": {"status": 200}}]},
         "body[0].then: expected the operations to run when the condition holds"),
        ({"body": [{"when": {}, "then": []}]}, "body[0].when: expected a condition with at least"),
        ({"body": [{"when": {"status": "2xxx"}, "then": []}]},
         "body[0].when.status: expected a status code (404), a class (4xx)"),
        ({"body": [{"when": {"stauts": 200}, "then": []}]},
         "body[0].when.stauts: expected a known key (did you mean 'status'?)"),
        ({"body": [{"when": {"present": "a"}, "then": [{"sett": {"a": 1}}]}]},
         "body[0].then[0].sett: expected a known operation"),
        ({"body": {404: [{"drop": "a"}]}}, "body.404: expected a status that is 2xx, got 404"),
        ({"error_body": {"2xx": []}}, "error_body.2xx: expected a status that is not 2xx"),
        ({"error_body": {"teapot": []}}, "error_body.teapot: expected a status code (404)"),
        ({"fill": [{"status": 204, "body": {}}]},
         "fill[0].status: expected statuses of answers that can carry a body (204 cannot: map"),
        ({"fill": [{"status": "1xx", "body": {}}]},
         "fill[0].status: expected statuses of answers that can carry a body (not 1xx)"),
        ({"fill": [{"status": 200}]}, "fill[0].body: expected the JSON body to give the answer"),
        ({"fill": [{"when": "always", "body": {}}]},
         "fill[0].when: expected empty, not_json or a list of them, got 'always'"),
    ],
)  # fmt: skip
def test_new_operations_misuse_names_the_key_path(response: Any, expected: str) -> None:
    errs = errors(rewrite_rule(applies_to="new", response=response))
    want = f"cutover.yaml: compat.rules[0].rewrite.response.{expected}"
    assert any(e.startswith(want) for e in errs), errs


def test_a_request_body_cannot_test_an_answer_status() -> None:
    body = [{"when": {"status": 200}, "then": [{"drop": "a"}]}]
    errs = errors(rewrite_rule(applies_to="new", body=body))
    assert any(
        e.startswith("cutover.yaml: compat.rules[0].rewrite.body[0].when.status: expected no "
                     "status condition here") for e in errs
    ), errs  # fmt: skip
    fan = {"rules": [{"name": "a", "match": {"path": "/a"},
                      "fan_out": {"item": [{"each": {"ops": body}}]}}],
           "backends": {"new": "go"}}  # fmt: skip
    errs = errors(fan)
    assert any("compat.rules[0].fan_out.item[0].each.ops[0].when.status" in e for e in errs), errs
