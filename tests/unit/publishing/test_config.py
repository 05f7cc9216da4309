"""The `publishing:` section: defaults, every key, errors naming the key path."""

from __future__ import annotations

import pytest

from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import parse_config
from cutover.publishing.config import (
    DEFAULT_SELECTORS,
    LAYOUTS,
    PublishingConfig,
    normalize_mode,
    parse_rate_limit,
)
from cutover.publishing.targets import RateLimit

BASE = {
    "backends": {"py": {"url": "http://127.0.0.1:1"}, "go": {"url": "http://127.0.0.1:2"}},
    "routes": [{"name": "default", "match": {"path_prefix": "/"}, "split": {"py": 100}}],
}


def parse(publishing: object) -> PublishingConfig:
    return parse_config({**BASE, "publishing": publishing}, "c.yaml").publishing


def errors(publishing: object) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse(publishing)
    return [str(e) for e in info.value.errors]


def test_defaults():
    cfg = parse({})
    assert cfg.mode == "normal" and cfg.targets == () and cfg.kubernetes is None
    d = cfg.delivery
    assert (d.workers, d.concurrency, d.max_attempts, d.max_age) == (16, 4, 10, 86400.0)
    assert (d.backoff_base, d.backoff_cap, d.lease) == (1.0, 300.0, 60.0)
    assert cfg.history.path == "/webhook/" and cfg.history.shape == "envelope"
    k = parse({"kubernetes": True}).kubernetes
    assert k.selectors == DEFAULT_SELECTORS and k.layouts == LAYOUTS
    assert k.namespaces == ("default",) and k.resync == 300.0


def test_targets_with_type_defaults(monkeypatch):
    monkeypatch.setenv("PD", "key-from-env")
    cfg = parse(
        {
            "targets": [
                {"name": "pd", "type": "pagerduty", "routing_key": "${PD}"},
                {"name": "sl", "type": "slack", "url": "https://hooks.slack.com/services/a"},
                {"name": "ro", "type": "rootly", "token": "t", "kind": "incident",
                 "rate_limit": {"rate": "30/min", "burst": 3}},
                {"name": "wh", "type": "webhook", "url": "http://x.example/h",
                 "format": "webhook", "enabled": False, "timeout": "2s", "concurrency": 2,
                 "headers": {"X-Api-Key": "k"}, "rate_limit": "5/s"},
            ]
        }
    )  # fmt: skip
    pd, sl, ro, wh = cfg.targets
    assert pd.url == "https://events.pagerduty.com/v2/enqueue" and pd.routing_key == "key-from-env"
    assert pd.rate_limit == RateLimit(2.0, 10)  # 120/min
    assert sl.rate_limit == RateLimit(1.0, 1) and sl.format == "slack"
    assert ro.url == "https://api.rootly.com" and ro.rate_limit == RateLimit(0.5, 3)
    assert ro.kind == "incident"
    assert wh.format == "webhook" and not wh.enabled and wh.timeout == 2.0
    assert wh.concurrency == 2 and wh.headers == (("X-Api-Key", "k"),)
    assert wh.rate_limit == RateLimit(5.0, 5)


@pytest.mark.parametrize(
    ("publishing", "expected"),
    [
        ({"mode": "loud"}, "publishing.mode: expected normal or metrics-only"),
        ({"targets": {}}, "publishing.targets: expected a list of targets"),
        ({"targets": [{"type": "webhook"}]}, "publishing.targets[0].name: expected a value"),
        ({"targets": [{"name": "a", "type": "fax"}]},
         "publishing.targets[0].type: expected one of pagerduty, slack, rootly, webhook"),
        ({"targets": [{"name": "a", "type": "slack", "format": "webhook", "url": "http://h"}]},
         "publishing.targets[0].format: expected slack for a slack target"),
        ({"targets": [{"name": "a", "type": "webhook"}]},
         "publishing.targets[0].url: expected the webhook URL (this key is required)"),
        ({"targets": [{"name": "a", "type": "pagerduty"}]},
         "publishing.targets[0].routing_key: expected the PagerDuty integration's routing key"),
        ({"targets": [{"name": "a", "type": "slack", "url": "http://h", "bot_token": "x"}]},
         "publishing.targets[0].channel: expected a channel id"),
        ({"targets": [{"name": "backend-x", "type": "webhook", "url": "http://h"}]},
         "publishing.targets[0].name: expected a name not starting with 'backend'"),
        ({"targets": [{"name": "a", "type": "webhook", "url": "http://h", "rate_limit": "fast"}]},
         "publishing.targets[0].rate_limit: expected a rate such as 120/min"),
        ({"targets": [{"name": "a", "type": "webhook", "url": "http://h"},
                      {"name": "a", "type": "webhook", "url": "http://h"}]},
         "publishing.targets[1].name: expected a name used by one target only"),
        ({"targets": [{"name": "a", "type": "webhook", "url": "http://h", "colour": 1}]},
         "publishing.targets[0].colour: expected a known key"),
        ({"kubernetes": {"layouts": ["yaml"]}},
         "publishing.kubernetes.layouts[0]: expected layout"),
        ({"kubernetes": {"namespaces": ["Bad_NS"]}},
         "publishing.kubernetes.namespaces[0]: expected namespace"),
        ({"kubernetes": {"kubeconfig": "/nonexistent/kc"}},
         "publishing.kubernetes.kubeconfig: expected an existing file"),
        ({"delivery": {"backoff": {"base": "10s", "cap": "1s"}}},
         "publishing.delivery.backoff.cap: expected a duration >= backoff.base"),
        ({"delivery": {"workers": 0}}, "publishing.delivery.workers: expected an integer from 1"),
        ({"delivery": {"lease": "5s"}, "targets": [{"name": "a", "type": "webhook",
                                                   "url": "http://h", "timeout": "10s"}]},
         "publishing.delivery.lease: expected a lease longer than the slowest target timeout"),
        ({"history": {"backends": {"ruby": {"path": "/x"}}}},
         "publishing.history.backends.ruby: expected a backend defined under backends"),
        ({"history": {"backends": {"go": {"shape": "round"}}}},
         "publishing.history.backends.go.shape: expected one of envelope, flat"),
    ],
)  # fmt: skip
def test_errors_name_the_key_path(publishing, expected):
    found = errors(publishing)
    assert any(expected in e for e in found), found


def test_mode_spellings():
    assert [normalize_mode(m) for m in ("normal", "intelligent", "metrics-only", "metrics_only",
                                        "METRICS_ONLY", "x", None)] == [
        "normal", "normal", "metrics-only", "metrics-only", "metrics-only", None, None]  # fmt: skip
    assert parse({"mode": "intelligent"}).mode == "normal"
    assert parse({"mode": "metrics_only"}).mode == "metrics-only"


@pytest.mark.parametrize(
    ("text", "rate", "burst"),
    [("120/min", 2.0, 10), ("1/s", 1.0, 10), ("60/m", 1.0, 10), ("3600/h", 1.0, 10),
     ({"rate": "10/s", "burst": 4}, 10.0, 4)],
)  # fmt: skip
def test_rate_limits(text, rate, burst):
    assert parse_rate_limit(text, "pagerduty") == RateLimit(rate, burst)


def test_rate_limit_off():
    assert parse_rate_limit("off", "slack") is None
    assert parse_rate_limit(None, "slack") is None
    with pytest.raises(ValueError):
        parse_rate_limit("0/s", "slack")


def test_completion_batches():
    d = parse({}).delivery
    assert (d.complete_batch, d.complete_interval) == (64, 0.02)
    d = parse({"delivery": {"completions": {"batch": 500, "interval": "100ms"}}}).delivery
    assert (d.complete_batch, d.complete_interval) == (500, 0.1)
    assert parse({"delivery": {"completions": {"interval": 0}}}).delivery.complete_interval == 0
    # the oldest delivered job keeps its lease while it waits: far below the lease
    (problem,) = errors({"delivery": {"lease": "10s", "completions": {"interval": "1s"}}})
    assert "publishing.delivery.completions.interval" in problem and "lease / 100" in problem
    (problem,) = errors({"delivery": {"completions": {"batch": 0}}})
    assert "publishing.delivery.completions.batch" in problem
    (problem,) = errors({"delivery": {"completions": {"size": 5}}})
    assert "publishing.delivery.completions" in problem and "size" in problem
    # unset, the interval shrinks with a short lease rather than refusing the config
    assert parse({"delivery": {"lease": "1s"}}).delivery.complete_interval == 0.01


def test_claim_timeout_and_stall_after():
    d = parse({}).delivery
    assert (d.claim_timeout, d.stall_after) == (5.0, 60.0)
    d = parse({"delivery": {"claim_timeout": "750ms", "stall_after": "2m"}}).delivery
    assert (d.claim_timeout, d.stall_after) == (0.75, 120.0)
    (problem,) = errors({"delivery": {"claim_timeout": 0}})
    assert "publishing.delivery.claim_timeout" in problem and "duration" in problem
    (problem,) = errors({"delivery": {"stall_after": "soon"}})
    assert "publishing.delivery.stall_after" in problem
