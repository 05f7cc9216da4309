"""Token bucket, circuit breaker, backoff, Retry-After and the delivery verdicts."""

from __future__ import annotations

import random

import pytest

from cutover.core.backoff import backoff
from cutover.core.breaker import CircuitBreaker
from cutover.core.buckets import TokenBucket
from cutover.publishing.targets import RateLimit, Redactor, TargetSpec, redact_url
from cutover.publishing.transport import judge, retry_after_seconds


def test_token_bucket_rate_and_burst():
    b = TokenBucket(RateLimit(2.0, 3), now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.wait(0.0) == pytest.approx(0.5)
    assert b.take(0.5) and not b.take(0.5)
    assert b.take(10.0)  # refills up to the burst only
    assert [b.take(10.0) for _ in range(3)] == [True, True, False]


def test_token_bucket_shared_among_workers_and_pause():
    b = TokenBucket(RateLimit(2.0, 10), now=0.0, share=4)  # 4 workers on one host
    assert b.rate == 0.5 and b.burst == 2.5
    b.pause(until=30.0)
    assert b.wait(10.0) == 20.0 and not b.take(29.9) and b.take(30.0)
    unlimited = TokenBucket(None, now=0.0)
    assert all(unlimited.take(0.0) for _ in range(1000))


def test_breaker_opens_probes_and_closes():
    cb = CircuitBreaker(failures=3, open_for=30.0)
    assert [cb.record(False, t) for t in (0, 1, 2)] == [False, False, True]
    assert cb.state(10) == "open" and not cb.allows(10) and cb.wait(10) == 22
    assert cb.state(32) == "half_open" and cb.allows(32)
    cb.started(32)
    assert not cb.allows(32)  # one probe at a time
    cb.record(False, 33)  # the probe failed: open again from now
    assert cb.state(40) == "open" and cb.state(63) == "half_open"
    cb.started(63)
    cb.record(True, 64)
    assert cb.state(64) == "closed" and cb.consecutive == 0


def test_backoff_full_jitter_bounds():
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(60.0, 0.5 * 2**attempt)
        values = [backoff(attempt, 0.5, 60.0, rng) for _ in range(200)]
        assert all(0 <= v <= ceiling for v in values)
        assert max(values) > ceiling * 0.8  # spread over the whole range, not clustered
    assert backoff(10_000, 1.0, 5.0, rng) <= 5.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("99999", 3600.0), ("soon", None), ("", None),
     (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0)],
)  # fmt: skip
def test_retry_after(value, expected):
    now = 1445412420.0  # 07:27:00 that day
    assert retry_after_seconds(value, now) == expected


@pytest.mark.parametrize(
    ("status", "ok", "retry", "throttled"),
    [(200, True, False, False), (202, True, False, False), (429, False, True, True),
     (408, False, True, False), (500, False, True, False), (503, False, True, False),
     (400, False, False, False), (401, False, False, False), (404, False, False, False)],
)  # fmt: skip
def test_verdicts(status, ok, retry, throttled):
    out = judge(status, "", None)
    assert (out.ok, out.retry, out.throttled) == (ok, retry, throttled)


def test_redaction():
    assert redact_url("https://u:p@h.example:8443/a?token=x&b=2") == (
        "https://***@h.example:8443/a?token=***&b=***"
    )
    assert redact_url("https://hooks.slack.com/services/T1/B2/sekrit") == (
        "https://hooks.slack.com/services/***"
    )
    spec = TargetSpec(
        name="w", type="webhook", url="http://u:pw-123456@h/x?k=qsecret1", format="alertmanager",
        headers=(("Authorization", "Bearer tok-abcdef"),), routing_key="rk-123456",
    )  # fmt: skip
    redact = Redactor(spec.secrets())
    text = "got Bearer tok-abcdef and rk-123456 from http://u:pw-123456@h/x?k=qsecret1"
    cleaned = redact(text)
    for secret in ("tok-abcdef", "rk-123456", "pw-123456", "qsecret1"):
        assert secret not in cleaned
    assert "token" not in str(spec.public()) or "tok-abcdef" not in str(spec.public())
    assert "rk-123456" not in str(spec.public())


def test_token_bucket_says_how_many_tokens_are_there():
    b = TokenBucket(RateLimit(2.0, 3), now=0.0)
    assert b.available(0.0) == 3
    b.take(0.0)
    b.take(0.0)
    assert b.available(0.0) == 1 and b.available(0.25) == 1.5
    b.pause(until=5.0)
    assert b.available(4.0) == 0 and b.available(5.0) == 3
    assert TokenBucket(None, now=0.0).available(0.0) == float("inf")


def test_a_gate_has_room_for_its_free_slots_and_tokens():
    from cutover.publishing.config import DeliveryPolicy
    from cutover.publishing.delivery import TargetGate

    spec = TargetSpec("pd", "pagerduty", "https://x", "pagerduty", rate_limit=RateLimit(1.0, 2))
    gate = TargetGate(spec, DeliveryPolicy(concurrency=4), now=0.0, share=1)
    assert gate.room(0.0, local_rate=True) == 2  # two tokens saved up
    assert gate.room(0.0, local_rate=False) == 4  # the rate is kept in Redis: slots only
    gate.in_flight = 3
    assert gate.room(0.0, local_rate=True) == 1 and gate.room(0.0, local_rate=False) == 1
    gate.in_flight = 4
    assert gate.room(0.0, local_rate=False) == 0
    backend = TargetGate(None, DeliveryPolicy(workers=16), now=0.0, share=1)
    assert backend.room(0.0, local_rate=True) == 16
