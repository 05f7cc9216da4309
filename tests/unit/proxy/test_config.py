"""proxy.config: one loader, every problem reported with its file, key path and expectation."""

from __future__ import annotations

import ipaddress
import re
import textwrap
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from cutover.core.config_model import (
    IDEMPOTENT_METHODS,
    AdminConfig,
    HeaderMatch,
    HealthCheck,
    Limits,
    Mirror,
    Retry,
    Sticky,
    Timeouts,
)
from cutover.core.configkit import ConfigError, ConfigErrors, format_errors
from cutover.proxy.config import load_config, parse_config

MINIMAL: dict[str, Any] = {
    "backends": {"go": "http://go:8080", "python": "http://python:8080"},
    "routes": [{"name": "default", "split": {"go": 90, "python": 10}}],
}


def _write(tmp_path: Path, text: str, name: str = "cutover.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _errors(data: object, env: dict[str, str] | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(data, "test.yaml", env=env or {})
    return info.value.errors


def _only(data: object, env: dict[str, str] | None = None) -> ConfigError:
    errors = _errors(data, env)
    assert len(errors) == 1, format_errors(ConfigErrors(errors))
    return errors[0]


def _with(**changes: object) -> dict[str, object]:
    """MINIMAL with top-level keys replaced."""
    return {**MINIMAL, **changes}


def _route(**changes: object) -> dict[str, object]:
    """MINIMAL with its one route changed."""
    return _with(routes=[{**MINIMAL["routes"][0], **changes}])


FULL = """\
listen: "[::1]:8080"
workers: 4
admin: {listen: "127.0.0.1:9901", token: "${CUTOVER_ADMIN_TOKEN}"}
limits:
  max_body: 10MiB
  max_header_size: 8KiB
  max_headers: 50
  header_timeout: 250ms
  keepalive_timeout: 2m
  max_concurrency: 1000
  retry_after: 1.5s
  drain_timeout: 0
access_log: /var/log/cutover/access.log
headers:
  request_id: X-Req
  backend: off
  override: X-Cutover-Force
  trusted_proxies: [10.0.0.0/8, 127.0.0.1, "fd00::1/64"]
backends:
  python:
    url: http://alert-history-python:8080/
    health: {path: /health, interval: 5s, timeout: 1s, expected_status: "200"}
  go:
    url: https://alert-history-go/base/
    host_header: pass
    health: off
    outlier:
      consecutive_failures: 3
      base_ejection: 10s
      max_ejection: 1h
      max_ejection_percent: 100
      decay_interval: 45s
    tls: {ca_file: ca.pem, server_name: go.internal, verify: false}
    pool: {max_connections: 64, keepalive_timeout: 15s}
routes:
  - name: api
    match:
      path_regex: "^/api/v[12]/"
      methods: [get, POST]
      headers:
        X-Canary: "1"
        x-other: {regex: "^a", present: true}
        x-gone: {present: false}
    split: {python: 10, go: 90}
    sticky: {cookie: cid, ttl: 7d, secure: true}
    fallback: [python]
    timeout: 30s
    connect_timeout: 500ms
    per_try_timeout: 10s
    retry:
      attempts: 2
      methods: [GET]
      on_status: [503]
      buffer: 64k
      budget: {percent: 10, min: 1}
    mirror: {to: go, percent: 2.5}
    max_body: 50MB
  - name: default
    split: {go: 100}
    sticky: client_ip
storage: sqlite:///var/lib/cutover/state.db
redis: rediss://redis:6380/0
"""


# --- valid configs -------------------------------------------------------------------------


def test_full_config_parses_to_expected_values(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "ca.pem").write_text("not really a cert")
    monkeypatch.setenv("CUTOVER_ADMIN_TOKEN", "s3cret")
    config = load_config(_write(tmp_path, FULL))

    assert config.source == str(tmp_path / "cutover.yaml")
    assert config.listen == ("::1", 8080)
    assert config.workers == 4
    assert config.admin == AdminConfig(listen=("127.0.0.1", 9901), token="s3cret")
    assert config.limits == Limits(
        max_body=10 * 1024 * 1024,
        max_header_size=8192,
        max_headers=50,
        header_timeout=0.25,
        keepalive_timeout=120.0,
        max_concurrency=1000,
        retry_after=2,
        drain_timeout=0.0,
    )
    assert config.access_log.enabled is True
    assert config.access_log.path == "/var/log/cutover/access.log"
    assert config.headers.request_id == "X-Req"
    assert config.headers.backend is None
    assert config.headers.override == "X-Cutover-Force"
    assert config.headers.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("fd00::/64"),
    )
    assert config.storage == "sqlite:///var/lib/cutover/state.db"
    assert config.redis == "rediss://redis:6380/0"

    assert isinstance(config.backends, MappingProxyType)
    assert list(config.backends) == ["python", "go"]
    py, go = config.backends["python"], config.backends["go"]
    assert (py.url, py.scheme, py.host, py.port, py.base_path) == (
        "http://alert-history-python:8080",
        "http",
        "alert-history-python",
        8080,
        "",
    )
    assert py.health == HealthCheck(path="/health", timeout=1.0, expected_statuses=(200, 200))
    assert py.tls is None
    assert (go.scheme, go.host, go.port, go.base_path) == (
        "https",
        "alert-history-go",
        443,
        "/base",
    )
    assert go.authority == "alert-history-go"
    assert go.host_header == "pass"
    assert go.health is None
    assert go.outlier.consecutive_failures == 3
    assert go.outlier.max_ejection == 3600.0
    assert go.outlier.max_ejection_percent == 100
    assert go.outlier.decay_interval == 45.0
    assert py.outlier.decay_interval == 10.0  # Envoy's interval
    assert go.tls is not None
    assert go.tls.ca_file == str(tmp_path / "ca.pem")  # relative to the config file
    assert (go.tls.server_name, go.tls.verify, go.tls.cert_file) == ("go.internal", False, None)
    assert (go.pool.max_connections, go.pool.keepalive_timeout) == (64, 15.0)

    api, default = config.routes
    assert api.name == "api"
    assert api.match.path_prefix is None
    assert isinstance(api.match.path_regex, re.Pattern)
    assert api.match.path_regex.match("/api/v2/alerts")
    assert api.match.methods == frozenset({"GET", "POST"})
    assert api.match.headers == (
        HeaderMatch(name="x-canary", value="1"),
        HeaderMatch(name="x-other", regex=re.compile("^a")),
        HeaderMatch(name="x-gone", present=False),
    )
    assert api.split == (("python", 10), ("go", 90))  # order as written
    assert api.sticky == Sticky(
        kind="cookie", name="cid", cookie_ttl=7 * 86400.0, cookie_secure=True
    )
    assert api.fallback == ("python",)
    assert api.timeouts == Timeouts(connect=0.5, total=30.0, per_try=10.0)
    assert api.retry == Retry(
        attempts=2,
        methods=frozenset({"GET"}),
        on_status=frozenset({503}),
        buffer=64 * 1024,
        budget_percent=10.0,
        budget_min=1,
    )
    assert api.mirror == Mirror(to="go", percent=2.5)
    assert api.max_body == 50_000_000

    assert default.match.path_prefix == "/"
    assert default.split == (("go", 100),)
    assert default.sticky == Sticky(kind="client_ip")
    assert "2 backends, 2 routes" in config.summary()


def test_minimal_config_takes_the_dataclass_defaults() -> None:
    config = parse_config(MINIMAL, "mem.yaml", env={})
    assert config.listen == ("0.0.0.0", 8080)
    assert config.workers == 1
    assert config.admin == AdminConfig()
    assert config.limits == Limits()
    assert config.access_log.enabled is True and config.access_log.path is None
    assert config.headers.backend == "X-Cutover-Backend"
    assert config.storage is None and config.redis is None
    go = config.backends["go"]
    assert go.health == HealthCheck()
    assert go.tls is None
    route = config.routes[0]
    assert route.match.path_prefix == "/"
    assert route.sticky is None
    assert route.timeouts == Timeouts()
    assert route.retry.attempts == 1
    assert route.retry.methods == IDEMPOTENT_METHODS
    assert route.mirror is None and route.max_body is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("30d", 2592000.0),
        ("1h30m", 5400.0),
        (7, 7.0),
        ("1.5", 1.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    config = parse_config(_route(timeout=text), "t.yaml", env={})
    assert config.routes[0].timeouts.total == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (512, 512),
        ("8KiB", 8192),
        ("10MiB", 10 * 1024**2),
        ("1GiB", 1024**3),
        ("10MB", 10_000_000),
        ("8k", 8192),
        ("2M", 2 * 1024**2),
        ("1kb", 1000),
    ],
)
def test_sizes(text: object, size: int) -> None:
    config = parse_config(_route(max_body=text), "t.yaml", env={})
    assert config.routes[0].max_body == size


def test_retry_attempts_default_to_the_fallback_length() -> None:
    data = _with(
        backends={"a": "http://a", "b": "http://b", "c": "http://c"},
        routes=[{"name": "r", "split": {"a": 100}, "fallback": ["b", "c"]}],
    )
    assert parse_config(data, "t.yaml", env={}).routes[0].retry.attempts == 2


def test_switches_and_shorthands() -> None:
    routes = [{"name": "r", "split": {"go": 100}, "sticky": "cookie"}]
    config = parse_config(_with(admin=False, access_log=False, routes=routes), "t.yaml", env={})
    assert config.admin.listen is None
    assert config.access_log.enabled is False
    assert config.routes[0].sticky == Sticky(kind="cookie", name="cutover_id")
    config = parse_config(_with(admin={"listen": "off"}), "t.yaml", env={})
    assert config.admin.listen is None


def test_env_interpolation() -> None:
    data = _with(
        listen="${HOST:-127.0.0.1}:${PORT}",
        workers="${WORKERS}",
        admin={"token": "${TOKEN}"},
        redis="${REDIS_URL:-}",
        storage="sqlite:///$${literal}",
    )
    env = {"PORT": "9000", "WORKERS": "3", "TOKEN": "abc"}
    config = parse_config(data, "t.yaml", env=env)
    assert config.listen == ("127.0.0.1", 9000)
    assert config.workers == 3
    assert config.admin.token == "abc"
    assert config.redis is None  # an interpolation that comes out empty counts as null
    assert config.storage == "sqlite:///${literal}"


def test_load_config_interpolates_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GO_URL", "http://go.internal:9090")
    path = _write(
        tmp_path,
        """\
        backends:
          go: {url: "${GO_URL}"}
        routes:
          - {name: default, split: {go: 100}}
        """,
    )
    assert load_config(path).backends["go"].port == 9090


# --- broken configs ------------------------------------------------------------------------


def test_unknown_key_with_did_you_mean() -> None:
    err = _only(_route(tiemout="5s"))
    assert err.path == "routes[0].tiemout"
    assert "did you mean 'timeout'?" in str(err)
    assert str(err).startswith("test.yaml: routes[0].tiemout: expected a known key")


def test_unknown_top_level_and_nested_keys() -> None:
    data = _with(listne="0.0.0.0:1", backends={"go": {"url": "http://go", "helth": {}}})
    data["routes"] = [{"name": "r", "split": {"go": 100}}]
    errors = _errors(data)
    assert [e.path for e in errors] == ["listne", "backends.go.helth"]
    assert "did you mean 'listen'?" in errors[0].expected
    assert "did you mean 'health'?" in errors[1].expected


def test_weights_must_sum_to_100() -> None:
    err = _only(_route(split={"go": 90, "python": 20}))
    assert err.path == "routes[0].split"
    assert "sum to exactly 100" in err.expected
    assert "110" in str(err)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"split": {"go": 90, "pyhton": 10}}, "routes[0].split.pyhton"),
        ({"fallback": ["pyton"]}, "routes[0].fallback[0]"),
        ({"mirror": {"to": "gopher", "percent": 5}}, "routes[0].mirror.to"),
    ],
)
def test_unknown_backend_in_split_fallback_mirror(changes: dict[str, object], path: str) -> None:
    err = _only(_route(**changes))
    assert err.path == path
    assert "a backend defined under backends" in err.expected


def test_unknown_backend_suggests_a_close_name() -> None:
    err = _only(_route(split={"go": 90, "pyhton": 10}))
    assert "did you mean 'python'?" in str(err)


def test_bool_weight_is_not_an_int() -> None:
    err = _only(_route(split={"go": True, "python": 99}))
    assert err.path == "routes[0].split.go"
    assert "an integer from 0 to 100" in err.expected
    assert str(err).endswith("got True")


def test_bad_duration() -> None:
    err = _only(_route(timeout="5 seconds"))
    assert err.path == "routes[0].timeout"
    assert "a duration > 0" in err.expected


def test_zero_and_negative_durations() -> None:
    errors = _errors(_route(timeout=0, connect_timeout="-1s"))
    assert [e.path for e in errors] == ["routes[0].connect_timeout", "routes[0].timeout"]
    assert all("a duration > 0" in e.expected for e in errors)


def test_outlier_decay_interval_must_be_a_positive_duration() -> None:
    backends = {"go": {"url": "http://go", "outlier": {"decay_interval": 0}}, "python": "http://py"}
    err = _only(_with(backends=backends))
    assert err.path == "backends.go.outlier.decay_interval"
    assert "a duration > 0" in err.expected


def test_bad_size() -> None:
    err = _only(_with(limits={"max_body": "10 parsecs"}))
    assert err.path == "limits.max_body"
    assert "a size > 0" in err.expected


def test_bad_url_scheme() -> None:
    data = _with(backends={"go": {"url": "ftp://go:21"}, "python": "http://python"})
    err = _only(data)
    assert err.path == "backends.go.url"
    assert "scheme http or https" in err.expected


def test_url_with_query_or_credentials() -> None:
    data = _with(backends={"go": "http://go?x=1", "python": "http://u:pw@python"})
    errors = _errors(data)
    assert [e.path for e in errors] == ["backends.go.url", "backends.python.url"]
    assert "without ?query" in errors[0].expected
    assert "pw" not in str(errors[1])


def test_duplicate_route_name() -> None:
    data = _with(
        routes=[{"name": "r", "split": {"go": 100}}, {"name": "r", "split": {"python": 100}}]
    )
    err = _only(data)
    assert err.path == "routes[1].name"
    assert "a unique route name" in err.expected


def test_bad_regex_shows_the_re_error() -> None:
    err = _only(_route(match={"path_regex": "^/api/(v1"}))
    assert err.path == "routes[0].match.path_regex"
    assert "a valid regular expression" in err.expected
    assert "missing )" in err.expected


def test_per_try_timeout_longer_than_timeout() -> None:
    err = _only(_route(timeout="5s", per_try_timeout="6s"))
    assert err.path == "routes[0].per_try_timeout"
    assert "a duration <= timeout (5s)" in err.expected


def test_tls_on_http_url() -> None:
    data = _with(
        backends={"go": {"url": "http://go", "tls": {"verify": False}}, "python": "http://p"}
    )
    err = _only(data)
    assert err.path == "backends.go.tls"
    assert "use https://" in err.expected


def test_tls_files_must_exist_and_pair(tmp_path: Path) -> None:
    tls = {"cert_file": str(tmp_path / "missing.pem")}
    data = _with(backends={"go": {"url": "https://go", "tls": tls}, "python": "http://p"})
    errors = _errors(data)
    assert {e.path: e.expected for e in errors} == {
        "backends.go.tls.key_file": "a key_file together with cert_file",
        "backends.go.tls.cert_file": "an existing file",
    }
    assert str(tmp_path / "missing.pem") in str(errors[1])


def test_health_timeout_must_be_shorter_than_interval() -> None:
    health = {"interval": "1s", "timeout": "1s"}
    data = _with(backends={"go": {"url": "http://go", "health": health}, "python": "http://p"})
    err = _only(data)
    assert err.path == "backends.go.health.timeout"
    assert "shorter than interval" in err.expected


def test_missing_env_var() -> None:
    err = _only(_with(listen="${LISTEN_ADDR}"))
    assert err.path == "listen"
    assert "environment variable LISTEN_ADDR to be set" in err.expected


def test_yaml_syntax_error_has_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "backends:\n  go: http://go\n routes: []\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    (err,) = info.value.errors
    assert err.file == str(path)
    assert err.path.startswith("line 3")
    assert "valid YAML" in err.expected


def test_unquoted_env_reference_in_flow_mapping_gets_a_hint(tmp_path: Path) -> None:
    path = _write(tmp_path, "admin: {listen: 127.0.0.1:9901, token: ${TOKEN}}\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert "line 1" in str(info.value)
    assert "quote values that use ${...}" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path / "nope.yaml")
    (err,) = info.value.errors
    assert err.file == str(tmp_path / "nope.yaml")
    assert "a readable UTF-8 file (No such file or directory)" in str(err)


def test_duplicate_yaml_keys_are_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        backends:
          go: http://go
        routes:
          - name: r
            split: {go: 100, go: 100}
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    (err,) = info.value.errors
    assert err.path == "line 5"
    assert "'go' is repeated" in err.expected


def test_several_errors_reported_together() -> None:
    data = {
        "workers": 0,
        "backends": {"go": "gopher://go"},
        "routes": [{"name": "r", "split": {"go": 100}, "retry": {"attempts": "two"}}],
        "canary": {"baseline": "python"},
    }
    errors = _errors(data)
    assert [e.path for e in errors] == [
        "workers",
        "backends.go.url",
        "routes[0].retry.attempts",
        # feature sections are parsed last, when backends and routes are known
        "canary.candidate",
        "canary.baseline",
    ]
    assert "this key is required" in errors[-2].expected
    lines = format_errors(ConfigErrors(errors)).splitlines()
    assert len(lines) == 5 and all(line.startswith("test.yaml: ") for line in lines)


def test_token_is_redacted() -> None:
    errors = _errors(_with(admin={"listen": "127.0.0.1:9901", "token": "has space-s3cr3t"}))
    assert [e.path for e in errors] == ["admin.token"]
    text = str(ConfigErrors(errors))
    assert "s3cr3t" not in text
    assert "<redacted>" in text


@pytest.mark.parametrize(
    ("admin", "env"),
    [({"token": "${TOKEN}"}, {"TOKEN": "bad s3cr3t"}), ({"token": 73313}, {})],
)
def test_token_from_env_or_of_a_wrong_type_is_redacted(
    admin: dict[str, object], env: dict[str, str]
) -> None:
    err = _only(_with(admin=admin), env)
    assert err.path == "admin.token"
    assert "s3cr3t" not in str(err) and "73313" not in str(err)
    assert str(err).endswith("got <redacted>")


def test_secret_in_a_storage_url_is_redacted() -> None:
    err = _only(_with(storage="mysql://app:hunter2@db/cutover"))
    assert err.path == "storage"
    assert "hunter2" not in str(err)


def test_admin_off_loopback_needs_a_token() -> None:
    err = _only(_with(admin={"listen": "0.0.0.0:9901"}))
    assert err.path == "admin.token"
    assert "only listen on loopback" in err.expected


def test_missing_required_sections() -> None:
    errors = _errors({"listen": "0.0.0.0:8080"})
    assert [e.path for e in errors] == ["backends", "routes"]
    assert all("this key is required" in e.expected for e in errors)


def test_bad_listen_and_ipv6_without_brackets() -> None:
    errors = _errors(_with(listen="::1:8080", admin={"listen": "127.0.0.1:99999"}))
    assert [e.path for e in errors] == ["listen", "admin.listen"]
    assert "host:port" in errors[0].expected
    assert "a port from 0 to 65535" in errors[1].expected


def test_sticky_header_and_override_must_be_tokens() -> None:
    errors = _errors({**_route(sticky={"header": "X User"}), "headers": {"override": "X Force"}})
    assert [e.path for e in errors] == ["headers.override", "routes[0].sticky.header"]
    assert all("a header name" in e.expected for e in errors)


def test_top_level_must_be_a_mapping() -> None:
    err = _only(["not", "a", "mapping"])
    assert "expected a mapping" in str(err)


def test_every_message_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(yaml.safe_load(FULL.replace("10MiB", "ten")), "x.yaml", env={})
    for err in info.value.errors:
        assert "\n" not in str(err)


def test_the_host_sent_to_a_backend_follows_host_header() -> None:
    def backend(mode: str, url: str = "http://go.internal:8080"):  # type: ignore[no-untyped-def]
        data = {
            "listen": "127.0.0.1:0",
            "backends": {"go": {"url": url, "host_header": mode}},
            "routes": [{"name": "all", "split": {"go": 100}}],
        }
        return parse_config(data, "t.yaml", env={}).backends["go"]

    assert backend("backend").upstream_host == "go.internal:8080"
    assert backend("backend", "https://go.internal").upstream_host == "go.internal"
    assert backend("pass").upstream_host is None
    assert backend("alerts.example.com").upstream_host == "alerts.example.com"


def test_summary_names_every_feature_section_it_validated() -> None:
    text = """
listen: 127.0.0.1:8080
backends: {go: http://go:8080, python: http://python:8080}
routes: [{name: default, split: {go: 90, python: 10}, mirror: {to: python, percent: 5}}]
canary: {baseline: python, candidate: go, steps: [50, 100]}
compat: {profile: builtin:alert-history, backends: {new: go, legacy: python}}
alerts: {classification: {engine: rules}}
publishing: {targets: [{name: wh, type: webhook, url: "http://127.0.0.1:9/hook"}]}
parity: {endpoints: ["/alerts/{id}"]}
"""
    config = parse_config(yaml.safe_load(text), "full.yaml", env={})
    line = config.summary()
    assert line.startswith("full.yaml: ok — listen 127.0.0.1:8080, 2 backends, 1 routes")
    assert "canary go against python, steps 50/100" in line
    assert f"compat {len(config.compat.rules)} rules (profile builtin:alert-history)" in line
    assert "alerts on /webhook/proxy, classification rules, enrichment enriched" in line
    assert "publishing 1 targets, mode normal" in line
    assert "parity 1 endpoints, 1 mirrored routes" in line
    assert "canary" not in parse_config(MINIMAL, "mem.yaml", env={}).summary()
