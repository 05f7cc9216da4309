"""Every metric a gateway with every feature on declares keeps its name, type, labels, help text,
multiprocess mode and buckets: the chart's alert rules, the dashboard and anyone's queries read
them. `metrics_declared.txt` was written from the code before the metrics were regrouped per
feature; regenerate it only for a deliberate change:
`python -m tests.integration.test_metrics_declared`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry

from cutover.app import start_gateway
from cutover.proxy.config import parse_config
from tests.conftest import gateway_config

FIXTURE = Path(__file__).with_name("metrics_declared.txt")


def declared(registry: CollectorRegistry) -> list[str]:
    """One line per metric family: name, type, label names, multiprocess mode, buckets, help."""
    lines = []
    # prometheus_client keeps its collectors in `_collector_to_names`; the label names and the
    # multiprocess mode are attributes of the metric objects only (no public reader).
    for collector in registry._collector_to_names:
        labels = ",".join(getattr(collector, "_labelnames", ()))
        mode = getattr(collector, "_multiprocess_mode", "-")
        buckets = ",".join(repr(b) for b in getattr(collector, "_upper_bounds", ()))
        for family in collector.describe():
            fields = (family.name, family.type, labels, mode, buckets or "-", family.documentation)
            lines.append("\t".join(fields))
    return sorted(lines)


def _config(tmp: Path) -> dict:
    return gateway_config(
        {"go": "http://127.0.0.1:9", "python": "http://127.0.0.1:9"},
        route={"mirror": {"to": "go", "percent": 5}, "split": {"go": 50, "python": 50}},
        admin={"listen": "127.0.0.1:0", "token": "metrics-declared-token"},
        storage=f"sqlite:///{tmp / 'state.db'}",
        canary={"baseline": "python", "candidate": "go"},
        alerts={},
        publishing={"targets": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/"}]},
    )


async def gateway_declared(tmp: Path) -> list[str]:
    gw = await start_gateway(parse_config(_config(tmp), "test.yaml"))
    try:
        names = {type(f).__name__ for f in gw.features}
        assert {"CanaryFeature", "CompatFeature", "PublishingFeature", "AlertsFeature"} <= names
        assert "ParityFeature" in names
        return declared(gw.metrics.registry)
    finally:
        await gw.close()


async def test_every_metric_declared_before_is_declared_alike(tmp_path: Path) -> None:
    now = await gateway_declared(tmp_path)
    before = FIXTURE.read_text().splitlines()
    assert len(before) >= 40
    missing = sorted(set(before) - set(now))
    assert missing == [], "changed or gone:\n" + "\n".join(missing)
    assert sorted(set(now) - set(before)) == [], "new metrics: add them to the fixture"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        lines = asyncio.run(gateway_declared(Path(tmp)))
    FIXTURE.write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} metrics -> {FIXTURE}", file=sys.stderr)
