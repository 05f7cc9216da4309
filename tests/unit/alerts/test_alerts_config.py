"""alerts.config: defaults, every key, and errors that name the key path."""

from __future__ import annotations

import pytest

from cutover.alerts.config import AlertsConfig
from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import parse_config

BASE = {
    "listen": "127.0.0.1:0",
    "backends": {"a": "http://127.0.0.1:1"},
    "routes": [{"name": "default", "split": {"a": 100}}],
}


def alerts(section) -> AlertsConfig:
    cfg = parse_config(dict(BASE, alerts=section), "t.yaml").alerts
    assert isinstance(cfg, AlertsConfig)
    return cfg


def errors(section) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(dict(BASE, alerts=section), "t.yaml")
    return [f"{e.path}: {e.expected}" for e in info.value.errors]


def test_defaults() -> None:
    cfg = alerts(None)
    assert [p.path for p in cfg.paths] == ["/webhook/proxy"]
    assert cfg.paths[0].formats == ("alertmanager", "prometheus")
    assert cfg.auth is None and cfg.max_body == 10 * 1024 * 1024
    assert cfg.dedup_window == 300 and cfg.enrichment_mode == "enriched"
    assert cfg.classification.engine == "rules" and cfg.classification.openai is None
    assert cfg.forward_to_route is None and cfg.routing.targets == ()
    assert alerts({"classification": "rules"}).classification.engine == "rules"


def test_full_section() -> None:
    cfg = alerts(
        {
            "paths": ["/webhook/proxy", {"path": "/hooks/grafana", "format": "generic",
                                         "mapping": {"alerts": "alerts", "labels": "labels",
                                                     "status": "state"}}],
            "auth": {"username": "am", "password": "pw"},
            "max_body": "1MiB",
            "dedup_window": "10m",
            "classification": {
                "engine": "openai",
                "categories": [{"category": "db", "alertname": "Postgres.*"}],
                "openai": {"base_url": "http://127.0.0.1:8000/v1", "model": "m", "api_key": "k",
                           "timeout": "5s", "retries": 2, "breaker": {"failures": 3, "reset": "1m"},
                           "calls_per_minute": 30, "cache_ttl": "2h", "min_confidence": 0.7,
                           "secret_patterns": ["internal-[0-9]+"]},
            },
            "enrichment": {"mode": "transparent"},
            "filters": {"default": "deny", "rules": [
                {"name": "ok", "action": "allow", "matchers": ['team="db"'], "priority": 5}]},
            "routing": {"targets": ["x"], "routes": [{"matchers": ["a=b"], "continue": True}]},
            "forward_to_route": "default",
            "retention": "3d",
        }
    )  # fmt: skip
    assert cfg.paths[1].formats == ("generic",) and cfg.paths[1].mapping is not None
    assert cfg.auth is not None and cfg.auth.username == "am" and "pw" not in repr(cfg.auth)
    o = cfg.classification.openai
    assert o is not None and o.retries == 2 and o.breaker.reset == 60 and o.cache_ttl == 7200
    assert "api_key" not in repr(o)
    assert any(p.pattern == "internal-[0-9]+" for p in o.secret_patterns)
    assert cfg.classification.rules.categories[0].category == "db"
    assert cfg.filters.default == "deny" and cfg.filters.rules[0].name == "ok"
    assert cfg.routing.routes[0].continue_ and cfg.routing.routes[0].targets is None
    assert cfg.retention == 3 * 86400 and cfg.enrichment_mode == "transparent"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"paths": []}, "alerts.paths: a non-empty list"),
        ({"paths": ["/a", "/a"]}, "alerts.paths[1]: each path once"),
        ({"paths": [{"path": "/g", "format": "generic"}]}, "alerts.paths[0].mapping: a field"),
        ({"paths": [{"path": "/g", "format": "xml"}]}, "alerts.paths[0].format: one of"),
        ({"paths": [{"path": "/g", "format": "generic", "mapping": {"alerts": "a..b"}}]},
         "alerts.paths[0].mapping.alerts: a field path"),
        ({"paths": [{"path": "/g", "format": "generic", "mapping": {"status": "s"}}]},
         "alerts.paths[0].mapping.label_fields: an alertname field"),
        ({"auth": {"bearer_token": "t", "password": "p"}}, "alerts.auth: either bearer_token"),
        ({"auth": {"username": "u"}}, "alerts.auth: bearer_token, or username and password"),
        ({"max_body": 0}, "alerts.max_body: a size > 0"),
        ({"dedup_window": "soon"}, "alerts.dedup_window: a duration"),
        ({"classification": "llm"}, "alerts.classification: a mapping"),
        ({"classification": {"engine": "openai"}}, "alerts.classification.openai: an openai block"),
        ({"classification": {"openai": {"model": "m"}}},
         "alerts.classification.openai.base_url: the server's URL"),
        ({"classification": {"openai": {"base_url": "ftp://x"}}},
         "alerts.classification.openai.base_url: an http(s) URL"),
        ({"classification": {"openai": {"base_url": "http://x", "min_confidence": 2}}},
         "alerts.classification.openai.min_confidence: a number"),
        ({"classification": {"categories": [{"category": "x"}]}},
         "alerts.classification.categories[0]: an alertname pattern or labels"),
        ({"enrichment": "loud"}, "alerts.enrichment: one of transparent, enriched"),
        ({"filters": [{"name": "a", "action": "drop"}]}, "alerts.filters[0].action: allow, deny"),
        ({"filters": [{"name": "a", "action": "delay"}]}, "alerts.filters[0].delay: a duration"),
        ({"filters": [{"name": "a", "action": "deny", "delay": "1m"}]},
         "alerts.filters[0].delay: a delay only with action: delay"),
        ({"filters": [{"name": "a", "action": "deny", "matchers": ["x~y"]}]},
         "alerts.filters[0].matchers[0]: a matcher"),
        ({"filters": [{"name": "a", "action": "deny"}, {"name": "a", "action": "deny"}]},
         "alerts.filters[1].name: a unique rule name"),
        ({"routing": {"routes": [{"targets": "x"}]}}, "alerts.routing.routes[0].targets: a list"),
        ({"routing": {"routes": [{"matchers": ['a=~"("']}]}},
         "alerts.routing.routes[0].matchers[0]: a valid regular expression"),
        ({"forward_to_route": "nope"}, "alerts.forward_to_route: the name of a route"),
        ({"bogus": 1}, "alerts.bogus: a known key"),
    ],
)  # fmt: skip
def test_errors_name_the_key(section, expected) -> None:
    found = errors(section)
    assert any(e.startswith(expected) for e in found), found


def test_secrets_are_redacted_in_errors() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(dict(BASE, alerts={"auth": {"bearer_token": "bad token"}}), "t.yaml")
    assert "bad token" not in str(info.value)
