"""Legacy-usage accounting and the report (pure)."""

from __future__ import annotations

from cutover.compat.deprecation import Deprecation
from cutover.compat.paths import compile_template
from cutover.compat.report import usage_report, usage_text
from cutover.compat.rules import Rule, RuleMatch
from cutover.compat.usage import OVERFLOW, UsageBuffer, caller_of, hash_key


def test_callers_by_key_are_hashed_else_by_agent_and_ip() -> None:
    a = caller_of("secret-key-1", "curl/8", "10.0.0.1")
    assert a.kind == "key" and a.id == f"key:{hash_key('secret-key-1')}"
    assert "secret-key-1" not in repr(a)
    assert caller_of("secret-key-1", "other", "10.0.0.2").id == a.id  # the key decides
    b = caller_of(None, "curl/8", "10.0.0.1")
    assert b.kind == "client" and b.user_agent == "curl/8" and b.client_ip == "10.0.0.1"
    assert caller_of("", "curl/8", "10.0.0.1").id == b.id
    assert caller_of(None, "curl/8", "10.0.0.2").id != b.id
    assert len(caller_of(None, "x" * 1000, "").user_agent) == 200


def test_buffer_aggregates_and_drains() -> None:
    buf = UsageBuffer()
    c1, c2 = caller_of("k1", "ua", "ip"), caller_of("k2", "ua", "ip")
    buf.record("history", c1, 10.0)
    buf.record("history", c1, 30.0)
    buf.record("history", c1, 20.0)
    buf.record("history", c2, 15.0)
    buf.record("webhook", c1, 40.0)
    got = {(d.rule, d.caller.id): (d.count, d.first_seen, d.last_seen) for d in buf.drain()}
    assert got == {
        ("history", c1.id): (3, 10.0, 30.0),
        ("history", c2.id): (1, 15.0, 15.0),
        ("webhook", c1.id): (1, 40.0, 40.0),
    }
    assert buf.drain() == []


def test_restore_merges_with_newer_calls() -> None:
    buf = UsageBuffer()
    c = caller_of("k", "ua", "ip")
    buf.record("r", c, 10.0)
    failed = buf.drain()
    buf.record("r", c, 50.0)
    buf.restore(failed)
    (d,) = buf.drain()
    assert (d.count, d.first_seen, d.last_seen) == (2, 10.0, 50.0)


def test_buffer_is_bounded() -> None:
    buf = UsageBuffer(max_keys=3)
    for i in range(100):
        buf.record("r", caller_of(f"k{i}", "", ""), float(i))
    assert len(buf) == 4  # three callers and the overflow slot
    items = {d.caller.id: d.count for d in buf.drain()}
    assert items[OVERFLOW.id] == 97
    assert buf.overflowed == 97


def _rule(name: str, sunset: int | None) -> Rule:
    dep = Deprecation(sunset=sunset) if sunset is not None else None
    return Rule(name, RuleMatch(paths=(compile_template("/x"),)), deprecation=dep)


def test_report_lists_nearest_sunset_then_busiest_first() -> None:
    now = 1_000_000.0
    rows = [
        {"rule": "late", "caller": "key:a", "kind": "key", "user_agent": "u", "client_ip": "1",
         "count": 50, "first_seen": 1.0, "last_seen": 2.0},
        {"rule": "soon", "caller": "key:b", "kind": "key", "user_agent": "u", "client_ip": "1",
         "count": 1, "first_seen": 1.0, "last_seen": 2.0},
        {"rule": "soon", "caller": "client:c", "kind": "client", "user_agent": "curl",
         "client_ip": "2", "count": 9, "first_seen": 1.0, "last_seen": 2.0},
        {"rule": "removed", "caller": "key:d", "kind": "key", "user_agent": "", "client_ip": "",
         "count": 3, "first_seen": 1.0, "last_seen": 2.0},
    ]  # fmt: skip
    rules = [_rule("soon", int(now + 2 * 86400)), _rule("late", int(now + 30 * 86400))]
    report = usage_report(rows, rules, now)
    order = [(c["rule"], c["caller"]) for c in report["callers"]]
    assert order == [("soon", "client:c"), ("soon", "key:b"), ("late", "key:a"),
                     ("removed", "key:d")]  # fmt: skip
    assert report["callers"][0]["days_to_sunset"] == 2
    assert report["callers"][-1]["configured"] is False
    summary = {r["rule"]: (r["calls"], r["callers"]) for r in report["rules"]}
    assert summary == {"soon": (10, 2), "late": (50, 1), "removed": (3, 1)}
    text = usage_text(report)
    assert text.splitlines()[1].startswith("soon") and "curl @ 2" in text
    assert usage_text({"callers": []}) == "no calls to legacy endpoints recorded"


def test_report_for_one_rule_lists_only_that_rule() -> None:
    now = 1_000_000.0
    rows = [
        {"rule": "soon", "caller": "key:b", "kind": "key", "user_agent": "u", "client_ip": "1",
         "count": 4, "first_seen": 1.0, "last_seen": 2.0},
    ]  # fmt: skip
    rules = [_rule("soon", int(now + 2 * 86400)), _rule("late", int(now + 30 * 86400))]
    report = usage_report(rows, rules, now, only="soon")
    assert [(r["rule"], r["calls"]) for r in report["rules"]] == [("soon", 4)]
    assert [c["rule"] for c in report["callers"]] == ["soon"]
    # a rule with no calls yet is still listed when it is the one asked for
    assert [r["calls"] for r in usage_report([], rules, now, only="late")["rules"]] == [0]
