"""Shadow traffic through a real gateway: never in the client's way, compared, stored, reported.

Every test runs on both listener paths: a mirrored route is served by the fast path (the copy
is taken there) and by aiohttp alone."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cutover.app import start_gateway
from cutover.core.db import open_database
from cutover.parity.corpus import load_corpus
from cutover.parity.lag import LoopLag
from cutover.parity.shadow import ParityFeature
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from tests.conftest import wait_for
from tests.integration.alerts_helpers import TcpRelay
from tests.integration.parity_samples import NOISE, PLANTED, Sample, samples

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # API times: RFC 3339 in UTC

HEALTH = {"path": "/healthz", "interval": "1s", "timeout": "500ms"}
HEAD = ("GET", b"/alerts/9", [(b"Host", b"x")], "::1", "http")  # a fast-path raw head

pytestmark = pytest.mark.usefixtures("serving_path")
PG_URL = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def config_for(
    primary: Sample, candidate: Sample, tmp_path: Path, route: dict[str, Any] | None = None,
    parity: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0"},
        "access_log": False,
        "storage": f"sqlite://{tmp_path}/state.db",
        "backends": {
            "python": {
                "url": primary.url,
                "health": {"path": "/healthz", "interval": "1s", "timeout": "500ms"},
            },
            "go": {
                "url": candidate.url,
                "health": {"path": "/healthz", "interval": "1s", "timeout": "500ms"},
            },
        },
        "routes": [
            {
                "name": "default",
                "split": {"python": 100, "go": 0},
                "mirror": {"to": "go", "percent": 100},
                **(route or {}),
            }
        ],
    }
    # Exact counts of copies: a busy test machine must not shed them (a test of shedding turns
    # it on by name).
    parity = dict(parity or {})
    parity["mirror"] = {"shed_lag": "off", "shed_wait": "off", **parity.get("mirror", {})}
    data["parity"] = parity
    return data


class Started(list[Gateway]):
    """The gateways a test started, and the listener path they are to use (None: the config's)."""

    fast_path: bool | None = None


@pytest.fixture
async def gateways(request: pytest.FixtureRequest) -> AsyncIterator[list[Gateway]]:
    started = Started()
    if "serving_path" in request.fixturenames:
        started.fast_path = request.getfixturevalue("serving_path") == "fast"
    yield started
    for gw in started:
        await gw.close()


async def start(started: list[Gateway], data: dict[str, Any], source: str = "t.yaml") -> Gateway:
    fast_path = getattr(started, "fast_path", None)
    if fast_path is not None and "fast_path" not in data:
        data = dict(data, fast_path=fast_path)
    gw = await start_gateway(parse_config(data, source))
    started.append(gw)
    return gw


def feature(gw: Gateway) -> ParityFeature:
    (found,) = [f for f in gw.features if isinstance(f, ParityFeature)]
    return found


def compared(parity: ParityFeature, route: str = "default") -> int:
    """The comparisons in `route`'s window (the mirror process's, or the own workers')."""
    return parity.parity_reading(route).compared


def metric(gw: Gateway, name: str, **labels: str) -> float:
    value = gw.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def fetch(
    session: aiohttp.ClientSession, url: str, method: str = "GET", body: bytes | None = None
) -> tuple[int, bytes, dict[str, str]]:
    async with session.request(method, url, data=body, headers={"X-Request-ID": "fixed"}) as r:
        content = await r.read()
        headers = {k: v for k, v in r.headers.items() if k.lower() not in ("date",)}
        return r.status, content, headers


async def test_mirror_leaves_client_responses_byte_identical(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with samples() as (primary, candidate):
        candidate.gate = asyncio.Event()  # the candidate answers nothing until released
        plain = await start(gateways, config_for(primary, candidate, tmp_path, {"mirror": "off"}))
        mirrored = await start(gateways, config_for(primary, candidate, tmp_path))
        requests = [("GET", "/echo/a?x=1", None), ("PUT", "/echo/b", b"payload" * 100),
                    ("DELETE", "/echo/c", None), ("GET", "/echo/d", None)]  # fmt: skip
        async with aiohttp.ClientSession() as session:
            for method, path, body in requests:
                expected = await fetch(session, plain.url + path, method, body)
                got = await fetch(session, mirrored.url + path, method, body)
                assert got == expected
                assert got[1].startswith(b"echo:")
        # every client had its answer while the candidate was still holding its copy
        await wait_for(lambda: len(candidate.seen) >= 1)
        assert (
            metric(mirrored, "cutover_parity_comparisons_total", route="default", result="same")
            == 0
        )
        # mirrored copies are marked; the client's requests are not
        assert all(h.get("X-Cutover-Mirror") == "1" for h in candidate.seen)
        clients = [h for h in primary.seen if "X-Cutover-Mirror" not in h]
        assert len(clients) == 2 * len(requests)  # the rest are noise requests (safe methods)
        candidate.gate.set()
        await wait_for(
            lambda: (
                metric(mirrored, "cutover_parity_comparisons_total", route="default", result="same")
                == len(requests)
            )
        )
        assert len(candidate.seen) == len(requests)


async def start_held(
    gateways: list[Gateway], primary: Sample, candidate: Sample, tmp_path: Path, process: bool
) -> Gateway:
    """A gateway whose mirror holds two jobs at most, in front of a candidate that holds every
    copy until its gate opens."""
    candidate.gate = asyncio.Event()
    mirror = {"queue": 2, "workers": 1, "process": process}
    return await start(
        gateways, config_for(primary, candidate, tmp_path, parity={"mirror": mirror})
    )


@pytest.mark.parametrize("process", [True, False], ids=["process", "inline"])
async def test_slow_candidate_drops_mirror_jobs_instead_of_queueing(
    tmp_path: Path, gateways: list[Gateway], process: bool
) -> None:
    async with samples() as (primary, candidate):
        gw = await start_held(gateways, primary, candidate, tmp_path, process)
        parity = feature(gw)
        depth = []
        async with aiohttp.ClientSession() as session:
            for i in range(20):
                status, _, _ = await fetch(session, f"{gw.url}/alerts/{i + 1}")
                assert status == 200
                depth.append(parity.depth)
        assert max(depth) <= 2  # the process holds two at most (waiting or under way)
        queued = metric(
            gw, "cutover_parity_mirror_requests_total", route="default", result="queued"
        )
        dropped = metric(
            gw, "cutover_parity_mirror_requests_total", route="default", result="dropped"
        )
        assert queued + dropped == 20
        # inline: one in the worker's hands, two waiting; the process: two held in all
        assert queued <= (2 if process else 3) and dropped >= 17
        assert len(candidate.seen) <= 1
        candidate.gate.set()
        await wait_for(
            lambda: (
                metric(gw, "cutover_parity_comparisons_total", route="default", result="differ")
                == queued
            )
        )
        assert "cutover_parity_mirror_requests_total" in (await _metrics_text(gw))


@pytest.mark.parametrize("process", [True, False], ids=["process", "inline"])
async def test_a_full_mirror_takes_no_copy(
    tmp_path: Path, gateways: list[Gateway], process: bool
) -> None:
    """Once the mirror holds `mirror.queue` jobs, a sampled request gets no tap at all (the copy
    would only be dropped when the answer is in): counted as dropped, and the primary's loop
    spends nothing more on it."""
    async with samples() as (primary, candidate):
        gw = await start_held(gateways, primary, candidate, tmp_path, process)
        parity = feature(gw)
        async with aiohttp.ClientSession() as session:
            for i in range(4):
                status, _, _ = await fetch(session, f"{gw.url}/alerts/{i + 1}")
                assert status == 200
        assert parity._full()
        route = gw.config.routes[0]
        dropped = metric(
            gw, "cutover_parity_mirror_requests_total", route="default", result="dropped"
        )
        tap = parity.sample(route, "python", "GET", b"", "rid", HEAD)
        assert tap is None
        assert (
            metric(gw, "cutover_parity_mirror_requests_total", route="default", result="dropped")
            == dropped + 1
        )
        candidate.gate.set()
        await wait_for(lambda: parity.depth == 0)
        assert not parity._full()
        tap = parity.sample(route, "python", "GET", b"", "rid", HEAD)
        assert tap is not None  # room again: copies are taken


class HeldLag:
    """A lag source the test sets: the probe keeps running but its samples are ignored."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(LoopLag, "observe", lambda self, late, waited=None: None)


async def test_a_lagging_event_loop_sheds_mirror_work_first(
    tmp_path: Path, gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    HeldLag(monkeypatch)
    async with samples() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path,
                                              parity={"mirror": {"shed_lag": "20ms",
                                                                 "workers": 1,
                                                                 "process": False}}))  # fmt: skip
        parity = feature(gw)

        def count(result: str) -> float:
            return metric(
                gw, "cutover_parity_mirror_requests_total", route="default", result=result
            )

        def compared() -> float:
            name = "cutover_parity_comparisons_total"
            same = metric(gw, name, route="default", result="same")
            return same + metric(gw, name, route="default", result="differ")

        async with aiohttp.ClientSession() as session:
            parity.lag.lag = 0.019  # under the threshold: mirrored
            assert (await fetch(session, f"{gw.url}/alerts/1"))[0] == 200
            await wait_for(lambda: len(candidate.seen) == 1)
            parity.lag.lag = 0.021  # over it: the primary answers, the copy is shed
            for i in range(5):
                assert (await fetch(session, f"{gw.url}/alerts/{i + 2}"))[0] == 200
            assert count("shed") == 5 and count("queued") == 1
            assert parity.in_flight() == {
                "mirror.queued": 0, "capture.queued": 0,
                "results.queued": 0, "results.committing": 0,
            }  # fmt: skip
            # A job already queued when the loop starts lagging waits for it to calm down.
            assert parity.queue is not None
            parity.lag.lag = 0.0
            candidate.gate = asyncio.Event()  # hold the worker on its next job
            assert (await fetch(session, f"{gw.url}/alerts/7"))[0] == 200
            await wait_for(lambda: len(candidate.seen) == 2)
            assert (await fetch(session, f"{gw.url}/alerts/8"))[0] == 200
            await wait_for(lambda: parity.in_flight()["mirror.queued"] == 1)
            parity.lag.lag = 0.5
            candidate.gate.set()
            await wait_for(lambda: compared() == 2, deadline=10)
            await asyncio.sleep(0.2)  # several probe intervals: the worker stays paused
            assert parity.queue.qsize() == 1 and len(candidate.seen) == 2
            parity.lag.lag = 0.0  # below the threshold: mirroring resumes
            await wait_for(lambda: compared() == 3, deadline=10)
            assert parity.queue.qsize() == 0
            assert (await fetch(session, f"{gw.url}/alerts/9"))[0] == 200
            await wait_for(lambda: compared() == 4, deadline=10)
        assert count("shed") == 5 and count("queued") == 4
        text = await _metrics_text(gw)
        assert 'cutover_parity_mirror_requests_total{result="shed",route="default"} 5.0' in text
        assert "cutover_parity_loop_lag_seconds" in text


async def test_shedding_off_mirrors_whatever_the_lag(
    tmp_path: Path, gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    HeldLag(monkeypatch)
    async with samples() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path,
                                              parity={"mirror": {"shed_lag": "off"}}))  # fmt: skip
        feature(gw).lag.lag = 5.0
        async with aiohttp.ClientSession() as session:
            assert (await fetch(session, f"{gw.url}/alerts/1"))[0] == 200
        await wait_for(lambda: len(candidate.seen) == 1)
        assert (
            metric(gw, "cutover_parity_mirror_requests_total", route="default", result="shed") == 0
        )


async def _metrics_text(gw: Gateway) -> str:
    async with aiohttp.ClientSession() as session, session.get(gw.url + "/metrics") as r:
        return await r.text()


async def exercise(gw: Gateway, alerts: int = 8) -> None:
    async with aiohttp.ClientSession() as session:
        for i in range(1, alerts + 1):
            assert (await fetch(session, f"{gw.url}/alerts/{i}"))[0] == 200
        # not mirrored: a POST (not idempotent) and a body that streamed unbuffered
        assert (await fetch(session, f"{gw.url}/echo/p", "POST", b"x"))[0] == 200

        async def chunks() -> AsyncIterator[bytes]:
            yield b"part"

        async with session.put(f"{gw.url}/echo/q", data=chunks()) as r:
            assert r.status == 200


async def admin(gw: Gateway, query: str = "") -> tuple[int, dict[str, Any]]:
    url = f"{gw.admin_url}/admin/parity{query}"
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, orjson.loads(await r.read())


async def check_results(gw: Gateway, alerts: int = 8) -> None:
    await wait_for(
        lambda: (
            metric(gw, "cutover_parity_comparisons_total", route="default", result="differ")
            == alerts
        )
    )
    parity = feature(gw)
    await wait_for(lambda: compared(parity) == alerts)
    assert parity.parity_rate("default") == 0.0  # every mirrored alert differs
    assert parity.parity_rate("nope") is None
    assert metric(gw, "cutover_parity_mirror_skipped_total", route="default", reason="method") == 1
    assert (
        metric(
            gw, "cutover_parity_mirror_skipped_total", route="default", reason="body_not_buffered"
        )
        == 1
    )
    status, body = await admin(gw)
    assert status == 200
    route = body["routes"]["default"]
    assert route["compared"] == alerts and route["parity_rate"] == 0.0
    assert route["mirror"] == {
        "to": "go",
        "percent": 100.0,
        "methods": ["DELETE", "GET", "HEAD", "OPTIONS", "PUT", "TRACE"],
    }
    (endpoint,) = route["endpoints"]
    assert endpoint["endpoint"] == "GET /alerts/{id}"
    assert {f["field"] for f in endpoint["fields"]} == PLANTED["GET /alerts/{id}"]
    noise = {f["field"] for f in endpoint["noise_fields"]}
    assert noise == {"$.generated_at", "$.request_id", "$.tags[*]"}
    example = endpoint["examples"][0]
    assert example["candidate"] == {"backend": "go", "status": 200}
    assert re.fullmatch(RFC3339, example["ts"]), example["ts"]  # as every API time
    assert {d["field"] for d in example["differences"]} == PLANTED["GET /alerts/{id}"]
    assert (await admin(gw, "?route=nope"))[0] == 404


async def test_mirrored_pairs_are_compared_stored_and_reported(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with samples() as (primary, candidate):
        data = config_for(primary, candidate, tmp_path, parity={"min_samples": 5})
        gw = await start(gateways, data)
        await exercise(gw)
        await check_results(gw)
        # the noise request went back to the primary, marked as a mirror copy
        assert sum(1 for h in primary.seen if h.get("X-Cutover-Mirror") == "1") == 8
        registry = gw.metrics.registry
        await wait_for(
            lambda: registry.get_sample_value("cutover_parity_rate", {"route": "default"}) == 0.0
        )
        assert 'cutover_parity_rate{route="default"} 0.0' in await _metrics_text(gw)
        # results outlive a restart: a new gateway on the same store starts with them
        await gw.close()
        gateways.remove(gw)
        again = await start(gateways, data)
        await wait_for(lambda: compared(feature(again)) == 8)
        assert feature(again).parity_rate("default") == 0.0


async def test_identical_candidate_has_full_parity(tmp_path: Path, gateways: list[Gateway]) -> None:
    async with samples() as (primary, _), samples() as (twin, _):
        data = config_for(primary, twin, tmp_path, parity={"min_samples": 5})
        gw = await start(gateways, data)
        parity = feature(gw)
        async with aiohttp.ClientSession() as session:
            for i in range(1, 5):
                await fetch(session, f"{gw.url}/alerts/{i}")
            await wait_for(lambda: compared(parity) == 4)
            assert parity.parity_rate("default") is None  # under min_samples
            for _ in range(4):
                await fetch(session, f"{gw.url}/history?limit=3")
        await wait_for(lambda: compared(parity) == 8)
        assert parity.parity_rate("default") == 1.0  # only noise differed


async def test_results_in_postgresql(tmp_path: Path, gateways: list[Gateway]) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = await open_database(PG_URL, schema=schema)  # creates the schema
    try:
        async with samples() as (primary, candidate):
            data = config_for(primary, candidate, tmp_path, parity={"min_samples": 5})
            data["storage"] = f"{PG_URL}?search_path={schema}"
            gw = await start(gateways, data)
            await exercise(gw)
            await check_results(gw)
            rows = await db.fetch("SELECT route, endpoint, fields FROM parity_results")
            assert len(rows) == 8
            assert {r["endpoint"] for r in rows} == {"GET /alerts/{id}"}
            raw = set(orjson.loads(rows[0]["fields"]))  # candidate vs primary, noise included
            assert raw == PLANTED["GET /alerts/{id}"] | (NOISE - {"body:3"})
            await gw.close()
            gateways.remove(gw)
    finally:
        await db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await db.close()


async def test_unsafe_methods_mirror_only_when_the_route_allows(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with samples() as (primary, candidate):
        route = {"mirror": {"to": "go", "percent": 100, "methods": ["POST"]}}
        gw = await start(gateways, config_for(primary, candidate, tmp_path, route))
        async with aiohttp.ClientSession() as session:
            await fetch(session, f"{gw.url}/echo/x", "POST", b'{"a": 1}')
            await fetch(session, f"{gw.url}/echo/y")  # GET is not in the list now
        await wait_for(lambda: len(candidate.seen) == 1)
        await wait_for(
            lambda: (
                metric(gw, "cutover_parity_comparisons_total", route="default", result="same") == 1
            )
        )
        # no second POST reached the primary for noise: it is not a safe method
        assert len(primary.seen) == 2
        assert (
            metric(gw, "cutover_parity_mirror_skipped_total", route="default", reason="method") == 1
        )


async def test_an_absolute_form_request_is_mirrored_in_origin_form(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    # a client with the gateway as its HTTP proxy sends `GET http://host/echo/...`
    async with samples() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path))
        async with (
            aiohttp.ClientSession() as session,
            session.get("http://example.test/echo/abs?x=1", proxy=gw.url) as r,
        ):
            assert r.status == 200
            assert await r.read() == b"echo:/echo/abs?x=1:"
        # the candidate answered the same path: the copy went where the original did
        await wait_for(
            lambda: (
                metric(gw, "cutover_parity_comparisons_total", route="default", result="same") == 1
            )
        )
        assert len(candidate.seen) == 1


async def test_capture_writes_a_redacted_corpus(tmp_path: Path, gateways: list[Gateway]) -> None:
    corpus = tmp_path / "captured.jsonl"
    async with samples() as (primary, candidate):
        route = {
            "mirror": "off",
            "capture": {"file": str(corpus), "redact_fields": ["$..password"]},
        }
        gw = await start(gateways, config_for(primary, candidate, tmp_path, route))
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": "Bearer s3cret", "Cookie": "sid=1", "X-Team": "core"}
            async with session.post(
                f"{gw.url}/echo/login?api_key=k3y&x=1",
                data=orjson.dumps({"user": "a", "password": "hunter2"}),
                headers={**headers, "Content-Type": "application/json"},
            ) as r:
                assert r.status == 200
            await fetch(session, f"{gw.url}/alerts/1")
        await wait_for(
            lambda: (
                metric(gw, "cutover_parity_capture_total", route="default", result="written") == 2
            )
        )
        text = corpus.read_text()
        assert "s3cret" not in text and "hunter2" not in text and "k3y" not in text
        post, get = load_corpus(corpus)
        headers_seen = dict(post.headers)
        assert headers_seen["Authorization"] == "<redacted>"
        assert headers_seen["Cookie"] == "<redacted>"
        assert headers_seen["X-Team"] == "core"
        assert orjson.loads(post.body or b"") == {"user": "a", "password": "<redacted>"}
        assert post.path == "/echo/login?api_key=%3Credacted%3E&x=1"
        assert (get.method, get.path, get.body) == ("GET", "/alerts/1", None)
        assert candidate.seen == []  # capture alone mirrors nothing


async def test_candidate_down_is_counted_and_reported_as_status(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with samples() as (primary, candidate):
        data = config_for(primary, candidate, tmp_path, parity={"min_samples": 3})
        await candidate.stop()  # nothing listens there any more
        data["backends"]["go"]["health"] = "off"
        gw = await start(gateways, data)
        async with aiohttp.ClientSession() as session:
            for i in range(3):
                status, body, _ = await fetch(session, f"{gw.url}/echo/{i}")
                assert (status, body) == (200, f"echo:/echo/{i}:".encode())
        await wait_for(
            lambda: metric(gw, "cutover_parity_mirror_failures_total", route="default",
                           kind="connect") == 3
        )  # fmt: skip
        parity = feature(gw)
        await wait_for(lambda: compared(parity) == 3)
        assert parity.parity_rate("default") == 0.0
        _, report = await admin(gw)
        (endpoint,) = report["routes"]["default"]["endpoints"]
        assert [f["field"] for f in endpoint["fields"]] == ["status"]


async def test_compat_requests_are_captured_as_sent_and_not_mirrored(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    """A legacy endpoint a compat rule rewrites is in the capture (the corpus a parity replay
    of legacy traffic needs), as the client sent it; it is not mirrored (the candidate would
    get the legacy request without the rule's rewrite), and the skip says why."""
    from aiohttp import web

    from cutover.examples.backends import go_app, legacy_app

    corpus = tmp_path / "captured.jsonl"
    runners, urls = [], {}
    for name, app in (("python", legacy_app()), ("go", go_app())):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        urls[name] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        data: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "admin": {"listen": "127.0.0.1:0"},
            "access_log": False,
            "storage": f"sqlite://{tmp_path}/state.db",
            "backends": {n: {"url": u, "health": HEALTH} for n, u in urls.items()},
            "routes": [
                {
                    "name": "default",
                    "split": {"python": 100, "go": 0},
                    "mirror": {"to": "go", "percent": 100},
                    "capture": {"file": str(corpus)},
                }
            ],
            "compat": {"profile": "builtin:alert-history"},
            # exact counts: a busy machine must not shed the one copy (as `config_for`)
            "parity": {"mirror": {"shed_lag": "off", "shed_wait": "off"}},
        }
        gw = await start(gateways, data)
        async with aiohttp.ClientSession() as session:
            legacy = f"{gw.url}/history?limit=5&status=firing"
            async with session.get(legacy, headers={"X-API-Key": "k"}) as r:
                assert r.status == 200 and r.headers["Deprecation"] == "@1738368000"
            async with session.get(f"{gw.url}/api/dashboard/overview") as r:
                assert r.status == 200  # no rule: captured and mirrored as before
        await wait_for(
            lambda: (
                metric(gw, "cutover_parity_capture_total", route="default", result="written") == 2
                and sum(
                    metric(gw, "cutover_parity_comparisons_total", route="default", result=result)
                    for result in ("same", "differ")
                )
                == 1  # the overview only (its last_updated differs: a raw difference)
            )
        )
        history, overview = sorted(load_corpus(corpus), key=lambda r: r.path)[::-1]
        assert (history.method, history.path) == ("GET", "/history?limit=5&status=firing")
        assert dict(history.headers)["X-API-Key"] == "<redacted>"
        assert overview.path == "/api/dashboard/overview"
        assert metric(gw, "cutover_parity_mirror_skipped_total", route="default", reason="compat")
        assert (
            metric(gw, "cutover_parity_mirror_requests_total", route="default", result="queued")
            == 1
        )
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_results_finished_together_are_written_in_one_statement(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with samples() as (primary, candidate):
        mirror = {"workers": 8, "process": False}  # the gateway's own results writer
        data = config_for(primary, candidate, tmp_path, parity={"mirror": mirror})
        gw = await start(gateways, data)
        parity = feature(gw)
        assert parity.results is not None
        candidate.gate = asyncio.Event()  # the copies wait at the candidate, then finish together
        async with aiohttp.ClientSession() as session:
            for i in range(8):
                assert (await fetch(session, f"{gw.url}/alerts/{i + 1}"))[0] == 200
            await wait_for(lambda: len(candidate.seen) == 8)
            candidate.gate.set()
            await wait_for(lambda: compared(parity) == 8)
        assert 0 < parity.results.batches < 8  # several results shared a statement
        ids = [i for i, _ in parity.book.windows["default"]]
        assert None not in ids and len(set(ids)) == 8
        db = await open_database(f"sqlite://{tmp_path}/state.db")
        try:
            assert await db.fetchval("SELECT COUNT(*) FROM parity_results") == 8
        finally:
            await db.close()


@pytest.mark.parametrize("process", [True, False], ids=["process", "inline"])
async def test_a_store_that_refuses_costs_results_not_answers(
    tmp_path: Path, gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch, process: bool
) -> None:
    """PostgreSQL goes away: results are counted as not stored, the primary's answers and the
    writer (the mirror process's, or the gateway's) carry on, and once the store is back
    results are written again."""
    # The window is read as this worker booked it: no reload from the store in between (one
    # would leave out the results without a row id).
    monkeypatch.setattr("cutover.parity.shadow.REFRESH_SECONDS", 3600.0)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = await open_database(PG_URL, schema=schema)
    relay = await TcpRelay().start()
    try:
        async with samples() as (primary, candidate):
            data = config_for(primary, candidate, tmp_path, parity={"mirror": {"process": process}})
            data["storage"] = (
                f"postgresql://postgres@127.0.0.1:{relay.port}/test?search_path={schema}"
            )
            gw = await start(gateways, data)
            parity = feature(gw)
            async with aiohttp.ClientSession() as session:
                for i in range(3):
                    assert (await fetch(session, f"{gw.url}/alerts/{i + 1}"))[0] == 200
                await wait_for(lambda: compared(parity) == 3)
                await relay.stop()
                for i in range(3):
                    assert (await fetch(session, f"{gw.url}/alerts/{i + 4}"))[0] == 200
                await wait_for(lambda: metric(gw, "cutover_parity_store_errors_total") == 3)
                # still compared and counted in this worker's window, without a row id
                assert compared(parity) == 6
                if not process:
                    ids = [i is None for i, _ in parity.book.windows["default"]]
                    assert ids == [False] * 3 + [True] * 3
                # the report falls back to this worker's window (the process's figures)
                status, report = await admin(gw)
                assert status == 200 and report["store"] == "unavailable"
                route = report["routes"]["default"]
                assert route["compared"] == 6
                assert bool(route["endpoints"]) is not process
                await relay.start()  # the same port: the store is back
                for i in range(2):
                    assert (await fetch(session, f"{gw.url}/alerts/{i + 7}"))[0] == 200
                await wait_for(lambda: compared(parity) == 8, deadline=30)
            assert await db.fetchval("SELECT COUNT(*) FROM parity_results") == 5
            if not process:
                await wait_for(lambda: parity.in_flight().get("results.queued") == 0)
    finally:
        await relay.stop()
        await db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await db.close()


async def test_a_store_that_hangs_costs_the_mirror_process_results_not_comparisons(
    tmp_path: Path, gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stops answering (connections taken, no byte back): the mirror process's
    writes and its windows' reads give up after the store timeout each, the comparisons go on
    and are counted, and once the store answers again results are stored and read again."""
    monkeypatch.setattr("cutover.parity.shadow.REFRESH_SECONDS", 0.2)  # (the child's reads)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = await open_database(PG_URL, schema=schema)
    relay = await TcpRelay().start()
    try:
        async with samples() as (primary, candidate):
            data = config_for(primary, candidate, tmp_path)
            data["storage"] = (
                f"postgresql://postgres@127.0.0.1:{relay.port}/test?search_path={schema}"
            )
            gw = await start(gateways, data)
            parity = feature(gw)

            def compared_total() -> float:
                name = "cutover_parity_comparisons_total"
                return sum(metric(gw, name, route="default", result=r) for r in ("same", "differ"))

            async with aiohttp.ClientSession() as session:
                for i in range(2):
                    assert (await fetch(session, f"{gw.url}/alerts/{i + 1}"))[0] == 200
                await wait_for(lambda: compared(parity) == 2, deadline=30)
                relay.pause()
                for i in range(3):
                    assert (await fetch(session, f"{gw.url}/alerts/{i + 3}"))[0] == 200
                await wait_for(
                    lambda: metric(gw, "cutover_parity_store_errors_total") == 3, deadline=60
                )
                assert compared_total() == 5 and compared(parity) == 5  # windowed, no row id
                process = parity.process
                assert process is not None and process.in_flight == 0
                relay.resume()
                for i in range(2):
                    assert (await fetch(session, f"{gw.url}/alerts/{i + 6}"))[0] == 200
                await wait_for(lambda: compared_total() == 7, deadline=60)
                # the reads work again: a whole reload leaves out the three never stored
                await wait_for(lambda: compared(parity) == 4, deadline=30)
            stored = await db.fetchval("SELECT COUNT(*) FROM parity_results")
            assert stored == 4 and metric(gw, "cutover_parity_store_errors_total") == 3
    finally:
        relay.resume()
        await relay.stop()
        await db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await db.close()


@pytest.mark.parametrize("process", [True, False], ids=["process", "inline"])
async def test_workers_sharing_a_store_read_each_others_results_once(
    tmp_path: Path, gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch, process: bool
) -> None:
    """Two workers on one store: each window (the mirror process's, or the gateway's own)
    takes the other's results from its reads (only what is new each time, never its own
    twice), and both agree on the rate."""
    monkeypatch.setattr("cutover.parity.shadow.REFRESH_SECONDS", 0.1)  # (the child's too)
    monkeypatch.setattr("cutover.parity.shadow.FULL_REFRESH", 10**6)  # after the first read
    async with samples() as (primary, candidate):
        settings = {"min_samples": 1, "mirror": {"process": process}}
        data = config_for(primary, candidate, tmp_path, parity=settings)
        a, b = await start(gateways, data), await start(gateways, data)
        fa, fb = feature(a), feature(b)
        reads: list[int | None] = []
        rows = fa.book.latest_rows

        async def spy(route: str, after: int | None = None, columns: str = "*") -> list[Any]:
            reads.append(after)
            return await rows(route, after, columns)

        fa.book.latest_rows = spy  # type: ignore[method-assign]
        if not process:
            await wait_for(lambda: all(f.book.windows["default"].top is not None for f in (fa, fb)))
        async with aiohttp.ClientSession() as session:
            for i in range(3):
                assert (await fetch(session, f"{a.url}/alerts/{i + 1}"))[0] == 200
            for _ in range(2):
                assert (await fetch(session, f"{b.url}/history"))[0] == 200
            await wait_for(lambda: compared(fa) == 5 == compared(fb))
            for i in range(2):
                assert (await fetch(session, f"{a.url}/alerts/{i + 4}"))[0] == 200
            await wait_for(lambda: compared(fa) == 7 == compared(fb))
        await asyncio.sleep(0.5)  # several more reads: nothing is added twice
        assert compared(fa) == 7 == compared(fb)
        rate = fa.parity_rate("default")
        assert rate is not None and rate == fb.parity_rate("default")
        if process:
            return
        for f in (fa, fb):
            ids = [i for i, _ in f.book.windows["default"]]
            assert len(ids) == 7 and len(set(ids)) == 7 and None not in ids
        assert sorted(i for i, _ in fa.book.windows["default"]) == sorted(
            i for i, _ in fb.book.windows["default"]
        )
        assert len(reads) > 5 and all(after is not None for after in reads[1:])  # only what's new
