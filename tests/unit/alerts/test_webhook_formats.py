"""alerts.webhook_formats: the three formats, every validation problem, fingerprints, times."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from cutover.alerts.model import Classification
from cutover.alerts.webhook_formats import (
    FieldMapping,
    alert_from_stored,
    alert_to_stored,
    alertmanager_fingerprint,
    compile_path,
    parse_payload,
    parse_single_alert,
    parse_time,
)
from cutover.core.clock import format_rfc3339

_SAMPLE_FILE = Path(__file__).resolve().parents[4] / "shared/reference/alertmanager-webhook-v4.json"
SAMPLE = json.loads(_SAMPLE_FILE.read_text()) if _SAMPLE_FILE.exists() else None
NOW = 1_800_000_000.0  # 2027-01-15


def sample() -> dict:
    if SAMPLE is not None:
        return copy.deepcopy(SAMPLE)
    return {
        "receiver": "proxy",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "ProxyUpstreamDown",
                    "instance": "127.0.0.1:8080",
                    "service": "proxy",
                    "severity": "critical",
                },
                "annotations": {"summary": "upstream down"},
                "startsAt": "2026-11-21T21:38:32Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:19090/graph",
                "fingerprint": "1481b3e4e23664d0",
            }
        ],
        "externalURL": "http://vm:19093",
        "version": "4",
        "groupKey": '{}:{alertname="ProxyUpstreamDown"}',
        "truncatedAlerts": 0,
    }


def paths(payload) -> list[str]:
    return [p.path for p in payload.problems]


def test_alertmanager_envelope() -> None:
    p = parse_payload(sample(), now=NOW)
    assert p.ok and p.format == "alertmanager"
    a = p.alerts[0]
    assert a.fingerprint == "1481b3e4e23664d0"
    assert a.status == "firing" and a.name == "ProxyUpstreamDown"
    assert a.starts_at == "2026-11-21T21:38:32Z" and a.ends_at.startswith("0001-01-01")
    assert a.receiver == "proxy" and a.group_key.startswith("{}:") and a.external_url
    assert p.starts_given == (True,) * len(p.alerts)


def test_fingerprint_is_alertmanagers() -> None:
    # The values Alertmanager 0.25 itself sent for these label sets.
    labels = {
        "alertname": "ProxyUpstreamDown",
        "instance": "127.0.0.1:8080",
        "service": "proxy",
        "severity": "critical",
    }
    assert alertmanager_fingerprint(labels) == "1481b3e4e23664d0"
    assert alertmanager_fingerprint(dict(labels, instance="127.0.0.1:8081")) == "d27718e7a37dc0a9"
    assert alertmanager_fingerprint({}) == "cbf29ce484222325"  # FNV-1a offset basis
    body = sample()
    for item in body["alerts"]:
        del item["fingerprint"]
    p = parse_payload(body, now=NOW)
    assert p.alerts[0].fingerprint == "1481b3e4e23664d0"


def test_fingerprint_independent_of_label_order() -> None:
    a = alertmanager_fingerprint({"b": "2", "a": "1", "alertname": "X"})
    b = alertmanager_fingerprint({"alertname": "X", "a": "1", "b": "2"})
    assert a == b
    assert a != alertmanager_fingerprint({"alertname": "X", "a": "12", "b": ""})


def test_unknown_fields_are_tolerated_and_minimal_alert_is_enough() -> None:
    body = {"alerts": [{"labels": {"alertname": "A"}, "extra": {"x": 1}}], "whatever": [1]}
    p = parse_payload(body, now=NOW)
    assert p.ok
    a = p.alerts[0]
    assert a.status == "firing" and a.annotations == {} and a.receiver == ""
    assert a.starts_at == format_rfc3339(NOW) and p.starts_given == (False,)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, ["$.alerts"]),
        ({"alerts": {}}, ["$.alerts"]),
        ({"alerts": [3]}, ["$.alerts[0]"]),
        ({"alerts": [{}]}, ["$.alerts[0].labels"]),
        ({"alerts": [{"labels": []}]}, ["$.alerts[0].labels"]),
        ({"alerts": [{"labels": {}}]}, ["$.alerts[0].labels.alertname"]),
        ({"alerts": [{"labels": {"alertname": ""}}]}, ["$.alerts[0].labels.alertname"]),
        ({"alerts": [{"labels": {"alertname": "A", "n": 1}}]}, ["$.alerts[0].labels.n"]),
        (
            {"alerts": [{"labels": {"alertname": "A", "a b": None}}]},
            ['$.alerts[0].labels["a b"]'],
        ),
        (
            {"alerts": [{"labels": {"alertname": "A"}, "annotations": {"s": 2}}]},
            ["$.alerts[0].annotations.s"],
        ),
        (
            {"alerts": [{"labels": {"alertname": "A"}, "annotations": "x"}]},
            ["$.alerts[0].annotations"],
        ),
        ({"alerts": [{"labels": {"alertname": "A"}, "status": "pending"}]}, ["$.alerts[0].status"]),
        (
            {"alerts": [{"labels": {"alertname": "A"}, "startsAt": "yesterday"}]},
            ["$.alerts[0].startsAt"],
        ),
        ({"alerts": [{"labels": {"alertname": "A"}, "startsAt": 17}]}, ["$.alerts[0].startsAt"]),
        (
            {"alerts": [{"labels": {"alertname": "A"}, "endsAt": "2026-02-30T00:00:00Z"}]},
            ["$.alerts[0].endsAt"],
        ),
        (
            {
                "alerts": [
                    {
                        "labels": {"alertname": "A"},
                        "startsAt": "2026-01-02T00:00:00Z",
                        "endsAt": "2026-01-01T00:00:00Z",
                    }
                ]
            },
            ["$.alerts[0].endsAt"],
        ),
        (
            {"alerts": [{"labels": {"alertname": "A"}, "fingerprint": 12}]},
            ["$.alerts[0].fingerprint"],
        ),
        (
            {"alerts": [{"labels": {"alertname": "A"}, "generatorURL": {}}]},
            ["$.alerts[0].generatorURL"],
        ),
        ({"alerts": [], "truncatedAlerts": -1}, ["$.truncatedAlerts"]),
        ({"alerts": [], "truncatedAlerts": "3"}, ["$.truncatedAlerts"]),
        ({"alerts": [], "version": 4}, ["$.version"]),
        ({"alerts": [], "status": "ok"}, ["$.status"]),
        (
            {"alerts": [], "receiver": 1, "groupKey": [], "externalURL": False},
            ["$.receiver", "$.groupKey", "$.externalURL"],
        ),
        ({"alerts": [], "commonLabels": "x"}, ["$.commonLabels"]),
        (
            {"alerts": [{"labels": {}}, {"labels": {"alertname": "B"}, "status": "x"}, "y"]},
            ["$.alerts[0].labels.alertname", "$.alerts[1].status", "$.alerts[2]"],
        ),
    ],
)
def test_every_problem_is_reported_with_its_path(body, expected) -> None:
    p = parse_payload(body, now=NOW, formats=("alertmanager",))
    assert not p.ok and p.alerts == ()
    assert paths(p) == expected
    assert all(x.expected for x in p.problems)


def test_problems_never_echo_label_values() -> None:
    body = {"alerts": [{"labels": {"alertname": "A", "token": {"secret": "hunter2"}}}]}
    p = parse_payload(body, now=NOW)
    assert "hunter2" not in json.dumps([x.as_dict() for x in p.problems])
    p = parse_payload({"alerts": [], "truncatedAlerts": -3}, now=NOW)
    assert p.problems[0].got == "-3"


def test_empty_alert_list_is_valid() -> None:
    p = parse_payload({"alerts": [], "truncatedAlerts": 4}, now=NOW)
    assert p.ok and p.alerts == () and p.truncated_alerts == 4


def test_prometheus_array_status_from_ends_at() -> None:
    body = [
        {"labels": {"alertname": "A"}, "startsAt": "2027-01-15T07:00:00Z",
         "endsAt": format_rfc3339(NOW + 60)},
        {"labels": {"alertname": "B"}, "startsAt": "2027-01-15T07:00:00Z",
         "endsAt": format_rfc3339(NOW - 1)},
        {"labels": {"alertname": "C"}},
    ]  # fmt: skip
    p = parse_payload(body, now=NOW)
    assert p.ok and p.format == "prometheus"
    assert [a.status for a in p.alerts] == ["firing", "resolved", "firing"]
    assert p.starts_given == (True, True, False)
    assert p.alerts[2].fingerprint == alertmanager_fingerprint({"alertname": "C"})


def test_prometheus_array_problems() -> None:
    p = parse_payload([{"labels": {"alertname": "A"}}, {"annotations": {}}], now=NOW)
    assert paths(p) == ["$[1].labels"]


def test_format_not_accepted_on_this_path() -> None:
    p = parse_payload([{"labels": {"alertname": "A"}}], now=NOW, formats=("alertmanager",))
    assert paths(p) == ["$"]
    p = parse_payload("text", now=NOW)
    assert paths(p) == ["$"] and "Alertmanager" in p.problems[0].expected
    p = parse_payload({"alerts": []}, now=NOW, formats=("prometheus",))
    assert paths(p) == ["$"]


MAPPING = FieldMapping(
    alerts=compile_path("data.items"),
    labels=compile_path("tags"),
    label_fields=(("alertname", compile_path("title")), ("priority", compile_path("meta.prio"))),
    annotation_fields=(("summary", compile_path("message")),),
    status=compile_path("state"),
    starts_at=compile_path("created"),
    fingerprint=compile_path("id"),
    generator_url=compile_path("link"),
)


def test_generic_mapping() -> None:
    body = {
        "data": {
            "items": [
                {"title": "DiskFull", "tags": {"host": "db1", "disk": 2, "hot": True},
                 "meta": {"prio": 1}, "message": "95% used", "state": "ALERTING",
                 "created": 1_700_000_000, "id": "evt-1", "link": "http://x/1", "other": [1]},
                {"title": "DiskFull", "state": "ok", "created": "2026-01-01T00:00:00+02:00"},
            ]
        }
    }  # fmt: skip
    p = parse_payload(body, now=NOW, formats=("generic",), mapping=MAPPING)
    assert p.ok and p.format == "generic"
    a, b = p.alerts
    assert dict(a.labels) == {
        "host": "db1", "disk": "2", "hot": "true", "alertname": "DiskFull", "priority": "1"
    }  # fmt: skip
    assert a.annotations["summary"] == "95% used" and a.status == "firing"
    assert a.fingerprint == "evt-1" and a.generator_url == "http://x/1"
    assert a.starts_at == "2023-11-14T22:13:20.000Z"
    assert b.status == "resolved" and b.starts_at == "2026-01-01T00:00:00+02:00"
    assert b.fingerprint == alertmanager_fingerprint({"alertname": "DiskFull"})


def test_generic_epoch_milliseconds_and_single_object() -> None:
    m = FieldMapping(label_fields=(("alertname", ("name",)),), starts_at=("at",))
    p = parse_payload(
        {"name": "X", "at": 1_700_000_000_500}, now=NOW, formats=("generic",), mapping=m
    )
    assert p.ok and p.alerts[0].starts_at == "2023-11-14T22:13:20.500Z"


def test_generic_problems() -> None:
    body = {"data": {"items": [{"tags": {"a": {}}, "state": "weird", "created": "soon"}, 4]}}
    p = parse_payload(body, now=NOW, formats=("generic",), mapping=MAPPING)
    assert paths(p) == [
        "$.data.items[0].tags.a",
        "$.data.items[0].title",
        "$.data.items[0].created",
        "$.data.items[0].state",
        "$.data.items[1]",
    ]
    p = parse_payload({"data": {}}, now=NOW, formats=("generic",), mapping=MAPPING)
    assert paths(p) == ["$.data.items"]
    p = parse_payload({"data": {"items": "x"}}, now=NOW, formats=("generic",), mapping=MAPPING)
    assert paths(p) == ["$.data.items"]


def test_detection_falls_back_to_generic_when_allowed() -> None:
    m = FieldMapping(label_fields=(("alertname", ("name",)),))
    formats = ("alertmanager", "prometheus", "generic")
    assert parse_payload({"name": "X"}, now=NOW, formats=formats, mapping=m).format == "generic"
    assert (
        parse_payload({"alerts": []}, now=NOW, formats=formats, mapping=m).format == "alertmanager"
    )


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a", ("a",)),
        ("a.b[2].c", ("a", "b", 2, "c")),
        ("$.a", ("a",)),
        ("$", ()),
        (".", ()),
        ("[0]", (0,)),
        ("a..b", None),
        ("a[x]", None),
        ("a[", None),
    ],
)
def test_compile_path(text, parts) -> None:
    assert compile_path(text) == parts


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:00Z", 0.0),
        ("1970-01-01T01:00:00+01:00", 0.0),
        ("1970-01-01T00:00:01.5Z", 1.5),
        ("2026-11-21T21:38:32.123456789Z", 1795297112.123456789),
        ("1970-01-01 00:00:10z", 10.0),
        ("2026-13-01T00:00:00Z", None),
        ("2026-01-01", None),
        ("2026-01-01T00:00:00", None),
        ("", None),
    ],
)
def test_parse_time(text, seconds) -> None:
    got = parse_time(text)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


def test_single_alert_and_stored_round_trip() -> None:
    alert, problems = parse_single_alert(
        {"labels": {"alertname": "A", "x": "1"}, "status": "resolved", "fingerprint": "f"}, now=NOW
    )
    assert problems == () and alert is not None
    classified = alert.__class__(
        **{**{f: getattr(alert, f) for f in alert.__slots__},
           "classification": Classification("warning", "disk", 0.9, "r", ("a", "b"), "llm", "m")}
    )  # fmt: skip
    again = alert_from_stored(json.loads(json.dumps(alert_to_stored(classified))))
    assert again == classified
    cached = dataclasses.replace(
        classified, classification=dataclasses.replace(classified.classification, cached=True)
    )
    stored = json.loads(json.dumps(alert_to_stored(cached)))
    assert alert_from_stored(stored) == cached  # a cache hit stays one
    del stored["classification"]["cached"]  # a row stored before the flag was kept
    assert alert_from_stored(stored) == classified
    none, problems = parse_single_alert({"labels": {}}, now=NOW, path="$.alert")
    assert none is None and [p.path for p in problems] == ["$.alert.labels.alertname"]


@pytest.mark.parametrize("bad", [5, None, True, ["x"], {"a": "b"}])
def test_one_bad_alertname_is_one_problem(bad: object) -> None:
    alert, problems = parse_single_alert({"labels": {"alertname": bad}}, now=NOW)
    assert alert is None
    assert [(p.path, p.expected) for p in problems] == [("$.labels.alertname", "a string")]
    title = bad if isinstance(bad, list | dict) else {}  # scalars are text in a mapping
    body = {"data": {"items": [{"title": title}]}}
    p = parse_payload(body, now=NOW, formats=("generic",), mapping=MAPPING)
    assert paths(p) == ["$.data.items[0].title"]


def test_group_labels_are_kept_with_each_alert() -> None:
    alerts = [{"labels": {"alertname": "Disk", "team": "db"}}, {"labels": {"alertname": "Disk"}}]
    body = {"groupLabels": {"alertname": "Disk", "team": "db", "odd": 5}, "alerts": alerts}
    p = parse_payload(body, now=NOW, formats=("alertmanager",))
    assert p.ok
    assert [dict(a.group_labels) for a in p.alerts] == [{"alertname": "Disk", "team": "db"}] * 2
    stored = json.loads(json.dumps(alert_to_stored(p.alerts[0])))
    assert alert_from_stored(stored) == p.alerts[0]
    del stored["groupLabels"]  # a row stored before group labels were kept
    assert dict(alert_from_stored(stored).group_labels) == {}
    bare = parse_payload({"alerts": [{"labels": {"alertname": "X"}}]}, now=NOW)
    assert dict(bare.alerts[0].group_labels) == {}
