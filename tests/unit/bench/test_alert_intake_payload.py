"""bench/alert_intake.py's webhooks: what the gateway's own parser makes of each shape."""

from __future__ import annotations

import orjson
import pytest

from cutover.alerts.webhook_formats import alertmanager_fingerprint, parse_payload
from cutover.bench.alert_intake import SHAPES, _payload


@pytest.mark.parametrize("shape", SHAPES)
def test_every_alert_is_new_and_valid(shape: str) -> None:
    seen: set[str] = set()
    for n in range(3):
        payload = parse_payload(orjson.loads(_payload("0a1b2c3d", n, 10, shape)), now=0.0)
        assert payload.ok, payload.problems
        assert payload.format == "alertmanager" and len(payload.alerts) == 10
        seen |= {alert.fingerprint for alert in payload.alerts}
    assert len(seen) == 30  # no alert of a run is a duplicate of another


def test_the_alertmanager_shape_carries_what_alertmanager_sends() -> None:
    body = orjson.loads(_payload("0a1b2c3d", 7, 2, "alertmanager"))
    assert {"groupLabels", "commonLabels", "commonAnnotations", "externalURL"} <= body.keys()
    sent = [alert["fingerprint"] for alert in body["alerts"]]
    assert sent == ["0a1b2c3d0000000e", "0a1b2c3d0000000f"]
    parsed = parse_payload(body, now=0.0)
    assert [alert.fingerprint for alert in parsed.alerts] == sent  # taken as given


def test_the_minimal_shape_leaves_the_fingerprint_to_the_gateway() -> None:
    body = orjson.loads(_payload("0a1b2c3d", 0, 1, "minimal"))
    assert "fingerprint" not in body["alerts"][0]
    parsed = parse_payload(body, now=0.0)
    assert parsed.alerts[0].fingerprint == alertmanager_fingerprint(body["alerts"][0]["labels"])
