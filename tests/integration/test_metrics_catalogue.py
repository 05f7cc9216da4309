"""What the chart's alert rules and Grafana dashboard read is what a running gateway exports:
every metric name they use is on /metrics, every label they select or group by is that
metric's, and every label value they compare with is one the code emits. And the outbox
depth, dead letters and store reachability are on /metrics, read from the store at scrape."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp

from cutover.bench.outbox_backlog import fill, job_rows
from cutover.core.clock import Clock, FakeClock
from cutover.core.db import open_database
from cutover.proxy.server import Gateway
from cutover.publishing.api import SCRAPE_MAX_AGE
from cutover.publishing.delivery import OUTCOMES
from cutover.publishing.outbox import Outbox
from cutover.routing.canary import PHASES, STATUSES
from tests.conftest import wait_for
from tests.helm.chart_helpers import CHART, case_values, render
from tests.integration.alerts_helpers import PG_URL, TcpRelay, envelope
from tests.integration.canary_helpers import FlakyBackend, canary_config, start, started
from tests.integration.canary_helpers import feature as canary_feature
from tests.integration.publishing_fakes import FakeWebhook
from tests.integration.publishing_helpers import CountQueries, make_alert
from tests.integration.publishing_helpers import config as publishing_config
from tests.integration.publishing_helpers import feature as publishing_feature
from tests.integration.publishing_helpers import start as start_publishing
from tests.integration.store_helpers import write_lock

# Labels Prometheus adds to every series it scrapes (target labels), not the gateway.
TARGET_LABELS = {"namespace", "job", "pod", "instance", "service", "endpoint", "container"}
# Label values the code emits that a quick run does not produce (all of them, by name).
KNOWN_VALUES = {
    ("cutover_canary_phase", "phase"): set(PHASES),
    ("cutover_canary_verdict", "verdict"): set(STATUSES),
    ("cutover_publishing_deliveries_total", "outcome"): set(OUTCOMES),
    ("cutover_canary_actions_total", "action"): {"rollback", "promote", "weights", "ramp"},
    ("cutover_enrichment_events_total", "event"): {
        "store_unavailable",
        "store_unavailable_background",
        "received",
    },
    ("cutover_shared_state_up", "backend"): {"redis", "store"},
}
SELECTOR = re.compile(r"(cutover_[a-z0-9_]+)\{([^}]*)\}")
BY = re.compile(r"\bby \(([^)]*)\) \(([^()]*(?:\([^()]*\))?[^()]*)\)")
NAME = re.compile(r"\bcutover_[a-z0-9_]+")


def expressions() -> list[str]:
    rules = render(case_values("gateway-ha")).one("PrometheusRule")["spec"]["groups"][0]["rules"]
    dashboard = json.loads((CHART / "dashboards" / "cutover.json").read_text())
    exprs = [r["expr"] for r in rules]
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def parse_exposition(text: str) -> dict[str, set[tuple[str, str]]]:
    """metric family (histograms without _bucket) -> {(label, value)} of its samples."""
    out: dict[str, set[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            out.setdefault(f"{name}_total" if kind == "counter" else name, set())
        if not line.startswith("cutover_"):
            continue
        name, _, rest = line.partition("{")
        name = family(name.split(" ")[0])
        if name.endswith("_created"):
            continue
        labels = set(re.findall(r'([a-z_]+)="([^"]*)"', rest.rpartition("}")[0]))
        out.setdefault(name, set()).update(labels)
    return out


async def exercised_gateway_metrics(tmp_path: Path) -> str:
    """/metrics of a gateway with every feature on, after some traffic, a rollback, an alert
    delivered and one dead-lettered, so that labelled series exist."""
    # go fails every request: its share falls back to python (fallback and error series exist
    # whatever the order of proxied and mirrored requests at go)
    go, py = FlakyBackend("go", every=1, status=503), FlakyBackend("python")
    hook = await FakeWebhook().start()
    async with started(go, py):
        data = canary_config(
            go,
            py,
            tmp_path,
            route={"mirror": {"to": "go", "percent": 100}},
            parity={"min_samples": 1},
            alerts={"routing": {"targets": ["hook", "gone"]}},
            publishing={
                "targets": [
                    {"name": "hook", "type": "webhook", "url": hook.url + "/hook"},
                    {"name": "gone", "type": "webhook", "url": hook.url + "/missing"},
                ],
                "delivery": {"poll_interval": "50ms", "max_attempts": 1},
            },
        )
        gw = await start(data)
        try:
            async with aiohttp.ClientSession() as s:
                for i in range(20):
                    async with s.get(gw.url + f"/x?i={i}") as r:
                        await r.read()
                async with s.post(gw.url + "/webhook/proxy", json=envelope(_alert())) as r:
                    assert r.status == 200, await r.text()
                await wait_for(lambda: len(hook.accepted) == 1, deadline=20)
                headers = {"Authorization": "Bearer t0ken-for-tests"}
                async with s.post(gw.admin_url + "/admin/rollback", headers=headers) as r:
                    assert r.status == 200
                await _until_dead_letter(s, gw.url)
                await canary_feature(gw).tick()  # a verdict, as the 1-s loop would make

                async def metrics() -> str:
                    async with s.get(gw.url + "/metrics") as r:
                        assert r.status == 200
                        return await r.text()

                await wait_async(metrics, lambda text: "cutover_parity_rate{" in text)
                return await metrics()
        finally:
            await gw.close()
            await hook.stop()


def _alert() -> dict:
    return {
        "status": "firing",
        "labels": {"alertname": "DiskFull", "severity": "critical"},
        "startsAt": "2026-11-21T21:38:32Z",
    }


async def _until_dead_letter(s: aiohttp.ClientSession, url: str) -> None:
    async def stats() -> dict:
        async with s.get(url + "/publishing/stats") as r:
            return await r.json()

    await wait_async(stats, lambda body: body["dead_letters"] == 1)


async def test_every_metric_and_label_of_the_rules_and_dashboard_exists(tmp_path: Path) -> None:
    exported = parse_exposition(await exercised_gateway_metrics(tmp_path))
    exprs = expressions()
    used = {family(n) for e in exprs for n in NAME.findall(e)}
    assert len(used) >= 20
    missing = sorted(used - set(exported))
    assert missing == [], f"not exported by the gateway: {missing}"
    for expr in exprs:
        for name, matchers in SELECTOR.findall(expr):
            name = family(name)
            for label, op, value in re.findall(r'([a-z_]+)\s*(=~|!=|=)\s*"([^"]*)"', matchers):
                if label in TARGET_LABELS:
                    continue
                labels = {k for k, _ in exported[name]}
                assert label in labels, f"{name} has no label {label!r} ({expr})"
                if op == "=":
                    seen = {v for k, v in exported[name] if k == label}
                    known = KNOWN_VALUES.get((name, label), set())
                    assert value in seen | known, f"{name}{{{label}={value!r}}} never emitted"
        for grouping, inner in BY.findall(expr):
            names = {family(n) for n in NAME.findall(inner)}
            labels = {k for n in names for k, _ in exported.get(n, set())} | TARGET_LABELS
            labels.add("le")
            for label in (x.strip() for x in grouping.split(",")):
                assert label in labels, f"by ({label}) is no label of {names} ({expr})"


async def scrape(s: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The outbox gauges of one /metrics answer (which must be a 200)."""
    async with s.get(url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    wanted = (
        "cutover_publishing_pending_jobs",
        "cutover_publishing_dead_letters",
        "cutover_store_up",
    )
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(wanted)
    }


async def test_outbox_depth_dead_letters_and_the_store_are_read_at_scrape(tmp_path: Path) -> None:
    hook = await FakeWebhook().start()
    relay = await TcpRelay().start()  # PostgreSQL through a relay the test can cut
    schema = f"m_{uuid.uuid4().hex[:12]}"
    storage = f"postgresql://postgres@127.0.0.1:{relay.port}/test?search_path={schema}"
    admin_db = await open_database(PG_URL)
    await admin_db.execute(f'CREATE SCHEMA "{schema}"')
    publishing = {
        "targets": [
            # disabled: its jobs wait in the outbox
            {"name": "held", "type": "webhook", "url": hook.url + "/hook", "enabled": False},
            # a 404 is never retried: its jobs go to the dead-letter queue
            {"name": "gone", "type": "webhook", "url": hook.url + "/missing"},
        ],
        "delivery": {"poll_interval": "50ms"},
    }
    gw = await start_publishing(publishing_config(tmp_path, publishing, storage=storage))
    db = await open_database(storage)
    try:
        outbox = Outbox(db, Clock())
        await outbox.setup()
        for i in range(3):
            async with db.transaction() as tx:
                alert = make_alert(f"fp-{i}")
                await outbox.enqueue(tx, alert, ["held", "gone"], now=Clock().now())
        async with aiohttp.ClientSession() as s:
            await wait_async(
                lambda: scrape(s, gw.url),
                lambda got: got.get('cutover_publishing_dead_letters{target="gone"}') == 3.0,
            )
            got = await scrape(s, gw.url)
            assert got['cutover_publishing_pending_jobs{target="held"}'] == 3.0
            assert got['cutover_publishing_pending_jobs{target="gone"}'] == 0.0
            assert got['cutover_publishing_dead_letters{target="held"}'] == 0.0
            assert got["cutover_store_up"] == 1.0
            await relay.stop()  # the store goes away: the scrape still answers, and says so
            # (once the count it may reuse is SCRAPE_MAX_AGE old)
            await wait_async(lambda: scrape(s, gw.url), lambda got: got["cutover_store_up"] == 0)
            got = await scrape(s, gw.url)
            assert got["cutover_store_up"] == 0.0
            assert got['cutover_publishing_pending_jobs{target="held"}'] == 3.0  # last known
    finally:
        await gw.close()
        await db.close()
        await hook.stop()
        await admin_db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin_db.close()


async def wait_async(read, holds, deadline: float = 20.0):  # type: ignore[no-untyped-def]
    """Poll `await read()` until `holds(value)`; fail after a generous deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if holds(await read()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


async def test_a_store_that_answers_the_count_with_an_error_never_fails_a_scrape(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    # PostgreSQL refusing the count (here: its table is gone) is the store being down for
    # /metrics, as a lost connection is; and no feature can fail a scrape (Feature contract)
    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin_db = await open_database(PG_URL)
    await admin_db.execute(f'CREATE SCHEMA "{schema}"')
    storage = f"{PG_URL}?search_path={schema}"
    gw = await start_publishing(publishing_config(tmp_path, {"targets": []}, storage=storage))
    try:
        async with aiohttp.ClientSession() as s:
            await wait_async(lambda: scrape(s, gw.url), lambda got: got["cutover_store_up"] == 1)
            await admin_db.execute(f'DROP TABLE "{schema}".publishing_jobs')
            # every scrape a 200; store_up 0 once the count it may reuse is SCRAPE_MAX_AGE old
            await wait_async(lambda: scrape(s, gw.url), lambda got: got["cutover_store_up"] == 0)
            assert "did not answer the outbox count" in caplog.text
            feature = gw.features[0]  # any feature whose refresh fails unexpectedly

            async def broken() -> None:
                raise RuntimeError("injected fault")

            monkeypatch.setattr(feature, "before_scrape", broken)
            got = await scrape(s, gw.url)  # still a 200
            assert "cutover_store_up" in got
            assert f"feature {feature.name} failed to refresh its metrics" in caplog.text
    finally:
        await gw.close()
        await admin_db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin_db.close()


async def _large_outbox(storage: str, tmp_path: Path, clock: FakeClock) -> Gateway:
    """A gateway over an outbox of 100,000 pending jobs, due in an hour (on `clock`): the
    delivery engine leaves them be."""
    made = await open_database(storage)  # the tables exist before the gateway starts
    try:
        await Outbox(made, Clock()).setup()
    finally:
        await made.close()
    await fill(storage, list(job_rows(50_000, ["a", "b"], clock.now() + 3_600)))
    targets = [
        {"name": n, "type": "webhook", "url": "http://127.0.0.1:9/hook", "enabled": False}
        for n in ("a", "b")
    ]
    gw = await start_publishing(
        publishing_config(tmp_path, {"targets": targets}, storage=storage), clock
    )
    await wait_for(lambda: publishing_feature(gw).outbox is not None)
    return gw


async def _scrapes_together(
    gw: Gateway, n: int, all_in: Callable[[], None]
) -> list[dict[str, float]]:
    """`n` scrapes of /metrics in flight at once; `all_in()` runs once every one of them is
    in the publishing feature's `before_scrape`."""
    feature = publishing_feature(gw)
    refresh = feature.before_scrape
    arrived = 0

    async def counted() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == n:
            all_in()
        await refresh()

    feature.before_scrape = counted  # type: ignore[method-assign]
    try:
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(*(scrape(s, gw.url) for _ in range(n)))
    finally:
        feature.before_scrape = refresh  # type: ignore[method-assign]


async def test_concurrent_scrapes_of_a_large_outbox_run_one_count(
    storage: str, tmp_path: Path
) -> None:
    """10 scrapes at once cost one `GROUP BY` over the 100,000 jobs, not ten; a scrape within
    SCRAPE_MAX_AGE (the gateway's clock) reuses it, and one after sees the new counts."""
    clock = FakeClock(wall=time.time())
    gw = await _large_outbox(storage, tmp_path, clock)
    try:
        outbox = publishing_feature(gw).outbox
        assert outbox is not None
        queries = CountQueries(outbox.db)
        queries.hold()  # a count reaches the store, and answers once all 10 scrapes wait
        results = await asyncio.wait_for(_scrapes_together(gw, 10, queries.release), 120)
        assert queries.seen == 1
        for got in results:
            assert got['cutover_publishing_pending_jobs{target="a"}'] == 50_000
            assert got['cutover_publishing_pending_jobs{target="b"}'] == 50_000
            assert got["cutover_store_up"] == 1.0
        await fill(storage, list(job_rows(7, ["a"], clock.now() + 3_600)))
        async with aiohttp.ClientSession() as s:
            clock.advance(SCRAPE_MAX_AGE / 2)
            got = await scrape(s, gw.url)  # the count of a moment ago
            assert got['cutover_publishing_pending_jobs{target="a"}'] == 50_000
            assert queries.seen == 1
            clock.advance(SCRAPE_MAX_AGE / 2)
            got = await scrape(s, gw.url)
            assert got['cutover_publishing_pending_jobs{target="a"}'] == 50_007
            assert got['cutover_publishing_pending_jobs{target="b"}'] == 50_000
            assert queries.seen == 2
    finally:
        await gw.close()


async def test_scrapes_while_the_store_hangs_answer_at_the_bound_and_say_so(
    pg_storage: str, tmp_path: Path
) -> None:
    """The count waits for a lock nobody releases: every scrape still answers, by
    SCRAPE_TIMEOUT, with store_up 0 and the depth last read; scrapes that come together
    share one count. Once the store answers (and the count is SCRAPE_MAX_AGE old) they say so."""
    clock = FakeClock(wall=time.time())
    gw = await _large_outbox(pg_storage, tmp_path, clock)
    try:
        outbox = publishing_feature(gw).outbox
        assert outbox is not None
        queries = CountQueries(outbox.db)
        async with aiohttp.ClientSession() as s:
            got = await scrape(s, gw.url)
            assert got["cutover_store_up"] == 1.0 and queries.seen == 1
            clock.advance(SCRAPE_MAX_AGE)
            async with write_lock(pg_storage, "publishing_jobs", readers=True):
                queries.hold()  # the count goes to the store once all five scrapes wait
                scrapes = _scrapes_together(gw, 5, queries.release)
                results = await asyncio.wait_for(scrapes, 60)  # each a 200
                assert queries.seen == 2  # one count for the five, given up at the bound
                for got in results:
                    assert got["cutover_store_up"] == 0.0
                    assert got['cutover_publishing_pending_jobs{target="a"}'] == 50_000
            got = await scrape(s, gw.url)  # a count that failed is not reused
            assert got["cutover_store_up"] == 1.0 and queries.seen == 3
    finally:
        await gw.close()
