"""Deprecation headers per their RFCs, and rule matching (pure)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from cutover.compat.deprecation import Deprecation, deprecation_headers, http_date
from cutover.compat.paths import compile_template
from cutover.compat.rules import Condition, Rule, RuleMatch, RuleSet, render_template

SINCE = int(datetime(2025, 2, 1, tzinfo=UTC).timestamp())
SUNSET = int(datetime(2025, 4, 1, tzinfo=UTC).timestamp())
# RFC 9110 §5.6.7 IMF-fixdate
IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT"
)
# RFC 9745 §2.1: Deprecation is an RFC 9651 Date: "@" and an integer
SF_DATE = re.compile(r"@-?\d{1,15}")
LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[a-z]+="[^"]*"\s*)+)')


def test_headers_parse_back_per_their_rfcs() -> None:
    dep = Deprecation(since=SINCE, sunset=SUNSET, link="https://x/MIGRATION.md",
                      sunset_link="https://x/DEPRECATION.md")  # fmt: skip
    headers = deprecation_headers(dep)
    values = {}
    links = []
    for name, value in headers:
        if name == "Link":
            links.append(value)
        else:
            values[name] = value
    assert SF_DATE.fullmatch(values["Deprecation"])
    assert int(values["Deprecation"][1:]) == SINCE
    assert IMF_FIXDATE.fullmatch(values["Sunset"])
    assert parsedate_to_datetime(values["Sunset"]) == datetime(2025, 4, 1, tzinfo=UTC)
    rels = {}
    for link in links:
        m = LINK.fullmatch(link)
        assert m is not None, link
        params = dict(re.findall(r'([a-z]+)="([^"]*)"', m.group(2)))
        rels[params["rel"]] = m.group(1)
    assert rels == {"deprecation": "https://x/MIGRATION.md", "sunset": "https://x/DEPRECATION.md"}
    assert deprecation_headers(None) == ()
    assert deprecation_headers(Deprecation(sunset=SUNSET)) == (("Sunset", http_date(SUNSET)),)


def test_http_date_is_locale_free_and_zero_padded() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(SUNSET) == "Tue, 01 Apr 2025 00:00:00 GMT"


def test_rule_fields_override_profile_wide_ones() -> None:
    base = Deprecation(since=1, sunset=2, link="a")
    assert base.merged(Deprecation(sunset=3)) == Deprecation(since=1, sunset=3, link="a")


def _rule(name: str, *paths: str, **match: object) -> Rule:
    return Rule(name, RuleMatch(paths=tuple(compile_template(p) for p in paths), **match))  # type: ignore[arg-type]


def test_first_rule_in_order_wins_literal_or_template() -> None:
    rules = RuleSet(
        (
            _rule("by-fp", "/history", query=(Condition("fingerprint"),)),
            _rule("item", "/alerts/{id}", methods=frozenset({"GET"})),
            _rule("history", "/history"),
            _rule("any-alert", "/alerts/{rest*}"),
        )
    )

    def match(method: str, path: str, query: dict[str, str] | None = None) -> str | None:
        hit = rules.match(method, path, lambda: query or {}, {})
        return None if hit is None else f"{hit.rule.name}{dict(hit.params)}"

    assert match("GET", "/history") == "history{}"
    assert match("GET", "/history", {"fingerprint": "x"}) == "by-fp{}"
    assert match("GET", "/alerts/7") == "item{'id': '7'}"
    assert match("POST", "/alerts/7") == "any-alert{'rest': '7'}"
    assert match("GET", "/alerts/7/x") == "any-alert{'rest': '7/x'}"
    assert match("GET", "/other") is None


def test_query_is_parsed_only_when_a_candidate_has_conditions() -> None:
    calls = []

    def query() -> dict[str, str]:
        calls.append(1)
        return {}

    rules = RuleSet((_rule("a", "/a", query=(Condition("x", present=False),)), _rule("b", "/b")))
    assert rules.match("GET", "/zzz", query, {}) is None
    assert rules.match("GET", "/b", query, {}) is not None
    assert calls == []
    assert rules.match("GET", "/a", query, {}) is not None
    assert calls == [1]


def test_conditions() -> None:
    assert Condition("k").holds("") and not Condition("k").holds(None)
    assert Condition("k", present=False).holds(None) and not Condition("k", present=False).holds("")
    assert Condition("k", equals="1").holds("1") and not Condition("k", equals="1").holds("2")
    assert Condition("k", regex=re.compile(r"\d+")).holds("12")
    assert not Condition("k", regex=re.compile(r"\d+")).holds("12a")  # whole value


def test_header_conditions() -> None:
    rules = RuleSet((_rule("v1", "/x", headers=(Condition("x-api-version", equals="1"),)),))
    assert rules.match("GET", "/x", dict, {"x-api-version": "1"}) is not None
    assert rules.match("GET", "/x", dict, {"x-api-version": "2"}) is None


def test_render_template_keeps_types() -> None:
    values = {"count": 3, "ms": 12}
    out = render_template({"n": "{count}", "s": "took {ms} ms", "k": ["{nope}", 1]}, values)
    assert out == {"n": 3, "s": "took 12 ms", "k": ["{nope}", 1]}
