"""Group commit of the alert intake (core/group_commit.py, alerts/intake.py), on SQLite and
PostgreSQL: webhooks that arrive while a batch commits share the next transaction, and each is
answered as if it had been alone — every alert stored once, dedup exact inside a batch, a
failed batch answered 503 to each of its members with nothing of it written, a client that goes
away leaving its alert committed with its batch, a storm past the queue refused at once, and a
shutdown flushing what waits.

Batches are made deterministic with a gate in front of the commit: the first webhook's batch is
held at the gate, so that those posted meanwhile queue up for the next one.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutover.alerts.intake import AlertsFeature, Webhook
from cutover.alerts.webhook_formats import parse_payload
from cutover.core.db import StoreUnavailable
from tests.conftest import wait_for
from tests.integration.alerts_helpers import am_alert, envelope, feature, intake_rows, jobs

pytestmark = pytest.mark.parametrize("store", ["sqlite", "postgresql"])

ALERTS = {"forward_to_route": "default", "routing": {"targets": ["slack"]}}


async def post(http: aiohttp.ClientSession, gw: Any, body: Any) -> tuple[int, dict, dict]:
    async with http.post(gw.url + "/webhook/proxy", data=orjson.dumps(body)) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


class Gate:
    """Holds each batch at the commit until `open`; `fail_next` makes the next batch's outbox
    write fail (after its dedup records and alert rows were written in the transaction)."""

    def __init__(self, f: AlertsFeature) -> None:
        self.f = f
        self.opened = asyncio.Event()
        self.fail_next = False
        self.sizes: list[int] = []
        commit = f.batcher._commit

        async def gated(items: list[Webhook]) -> Any:
            await self.opened.wait()
            self.sizes.append(len(items))
            return await commit(items)

        f.batcher._commit = gated  # type: ignore[method-assign]

    def arm_failure(self, outbox: Any) -> None:
        enqueue_many = outbox.enqueue_many

        async def failing(tx: Any, rows: Any) -> int:
            if self.fail_next:
                self.fail_next = False
                raise StoreUnavailable("injected: the store refused the batch")
            return await enqueue_many(tx, rows)

        outbox.enqueue_many = failing

    def open(self) -> None:
        self.opened.set()


async def held_first(http: aiohttp.ClientSession, gw: Any, gate: Gate) -> asyncio.Task:
    """Post one webhook and wait until its batch is held at the gate."""
    task = asyncio.create_task(post(http, gw, envelope(am_alert("First"))))
    await wait_for(lambda: gate.f.batcher.committing == 1)
    return task


async def queued(gate: Gate, alerts: int) -> None:
    await wait_for(lambda: gate.f.batcher.queued == alerts)


async def test_many_concurrent_webhooks_each_answered_and_stored_once(ag, http, store) -> None:
    gw = await ag.start(ALERTS, store=store)
    f = feature(gw)
    n = 120
    bodies = [envelope(am_alert(f"A{i}"), am_alert(f"B{i % 7}")) for i in range(n)]
    answers = await asyncio.gather(*(post(http, gw, b) for b in bodies))
    assert [a[0] for a in answers] == [200] * n
    for i, (_, data, _) in enumerate(answers):  # each answer is its own webhook's
        assert [a["alertname"] for a in data["alerts"]] == [f"A{i}", f"B{i % 7}"]
        assert data["alerts"][0]["result"] == "queued"
    # B0..B6: each queued exactly once over every webhook, the other deliveries duplicates
    b_results = [(d["alerts"][1]["alertname"], d["alerts"][1]["result"]) for _, d, _ in answers]
    for k in range(7):
        mine = [r for name, r in b_results if name == f"B{k}"]
        assert sorted(mine) == ["duplicate"] * (len(mine) - 1) + ["queued"], (k, mine)
    rows = await intake_rows(gw)
    assert len(rows) == n + 7
    assert len({r["fingerprint"] for r in rows}) == n + 7  # every alert once
    assert len(await jobs(gw)) == 2 * (n + 7)  # history copy + slack each
    assert f.counts["accepted"] == n + 7 and f.counts["received"] == 2 * n
    assert f.batcher.batches < n  # webhooks shared transactions


async def test_failed_batch_is_503_to_each_member_and_nothing_written(ag, http, store) -> None:
    gw = await ag.start(ALERTS, store=store)
    f = feature(gw)
    _, outbox = await f._store()
    gate = Gate(f)
    gate.arm_failure(outbox)
    first = await held_first(http, gw, gate)
    bodies = [envelope(am_alert(f"M{i}"), am_alert("Shared")) for i in range(5)]
    members = [asyncio.create_task(post(http, gw, b)) for b in bodies]
    await queued(gate, 10)
    gate.fail_next = False
    gate.open()
    assert (await first)[0] == 200  # the batch before is not touched
    gate.opened.clear()
    # The members' batch: held again, then failed inside its transaction.
    await wait_for(lambda: f.batcher.committing == 10)
    gate.fail_next = True
    gate.open()
    answers = await asyncio.gather(*members)
    for status, data, headers in answers:
        assert status == 503
        assert data["error"]["code"] == "store_unavailable"  # the existing shape
        assert headers.get("Retry-After") == "1"
    assert gate.sizes == [1, 5]
    assert [r["alertname"] for r in await intake_rows(gw)] == ["First"]
    assert len(await jobs(gw)) == 2
    assert f.counts["store_unavailable"] == 5
    # Nothing half-written: the dedup records went with the batch, so the retries are new.
    answers = await asyncio.gather(*(post(http, gw, b) for b in bodies))
    assert [a[0] for a in answers] == [200] * 5
    results = sorted(r["result"] for _, d, _ in answers for r in d["alerts"])
    assert results == ["duplicate"] * 4 + ["queued"] * 6
    assert len(await intake_rows(gw)) == 7


async def test_dedup_within_one_batch_as_one_by_one(ag, http, store) -> None:
    gw = await ag.start(ALERTS, store=store)
    f = feature(gw)
    gate = Gate(f)
    first = await held_first(http, gw, gate)
    same = envelope(am_alert("Twin"))
    flip = [
        envelope(am_alert("Flip")),
        envelope(am_alert("Flip", status="resolved")),
        envelope(am_alert("Flip")),
        envelope(am_alert("Flip")),
    ]
    tasks = [asyncio.create_task(post(http, gw, same)) for _ in range(2)]
    for body in flip:  # in order: each queued behind the one before
        tasks.append(asyncio.create_task(post(http, gw, body)))
        await queued(gate, len(tasks))
    tasks.append(asyncio.create_task(post(http, gw, envelope(am_alert("In"), am_alert("In")))))
    await queued(gate, len(tasks) + 1)
    gate.open()
    await first
    answers = [await t for t in tasks]
    assert gate.sizes == [1, 7]  # one batch
    results = [[a["result"] for a in d["alerts"]] for _, d, _ in answers]
    assert sorted(results[:2]) == [["duplicate"], ["queued"]]  # twins: one queued, one not
    assert results[2:] == [
        ["queued"],
        ["queued"],
        ["queued"],
        ["duplicate"],
        ["queued", "duplicate"],
    ]
    # The record is the last change's: a later repeat of the firing alert is a duplicate,
    # the resolve is new again.
    assert (await post(http, gw, flip[0]))[1]["alerts"][0]["result"] == "duplicate"
    assert (await post(http, gw, flip[1]))[1]["alerts"][0]["result"] == "queued"
    names = [(r["alertname"], r["status"]) for r in await intake_rows(gw)]
    assert names.count(("Twin", "firing")) == 1
    assert names.count(("Flip", "firing")) == 2 and names.count(("Flip", "resolved")) == 2


async def test_client_gone_while_waiting_alert_still_committed(ag, http, store) -> None:
    gw = await ag.start(ALERTS, store=store)
    f = feature(gw)
    gate = Gate(f)
    first = await held_first(http, gw, gate)
    async with aiohttp.ClientSession() as leaving:
        gone = asyncio.create_task(post(leaving, gw, envelope(am_alert("Gone"))))
        stays = asyncio.create_task(post(http, gw, envelope(am_alert("Stays"))))
        await queued(gate, 2)
        gone.cancel()  # the client goes away: its connection closes, its handler is cancelled
        with pytest.raises(asyncio.CancelledError):
            await gone
    await asyncio.sleep(0.1)
    assert f.batcher.queued == 2  # still in the batch
    gate.open()
    assert (await first)[0] == 200
    assert (await stays)[0] == 200
    await wait_for(lambda: f.batcher.queued == 0 and f.batcher.committing == 0)
    names = [r["alertname"] for r in await intake_rows(gw)]
    assert names == ["First", "Gone", "Stays"]  # committed with its batch, though unanswered
    # Alertmanager's retry of the unanswered webhook is a duplicate, not a second copy.
    _, data, _ = await post(http, gw, envelope(am_alert("Gone")))
    assert data["alerts"][0]["result"] == "duplicate"


async def test_storm_past_the_queue_is_refused_at_once(ag, http, store) -> None:
    gw = await ag.start({**ALERTS, "queue_max": 4}, store=store)
    f = feature(gw)
    gate = Gate(f)
    first = await held_first(http, gw, gate)
    waiting = [asyncio.create_task(post(http, gw, envelope(am_alert(f"Q{i}")))) for i in range(4)]
    await queued(gate, 4)
    refused = await asyncio.gather(*(post(http, gw, envelope(am_alert(f"R{i}"))) for i in range(3)))
    for status, data, headers in refused:  # answered while the gate is still shut
        assert status == 503 and data["error"]["code"] == "intake_overloaded"
        assert headers.get("Retry-After") == "1"
    gate.open()
    assert (await first)[0] == 200
    assert [(await t)[0] for t in waiting] == [200] * 4
    assert [r["alertname"] for r in await intake_rows(gw)] == ["First", "Q0", "Q1", "Q2", "Q3"]
    assert f.counts["overloaded"] == 3


async def test_shutdown_flushes_the_pending_batch(ag, http, store) -> None:
    gw = await ag.start(ALERTS, store=store)
    f = feature(gw)
    gate = Gate(f)
    first = await held_first(http, gw, gate)
    # Queued without a client waiting: only the shutdown's flush can commit them.
    futures = [f.batcher.submit(hook, 1) for hook in make_hooks(f, [[("P0",)], [("P1",)]])]
    stopping = asyncio.create_task(f.stop())  # what the gateway's close runs for the feature
    await wait_for(lambda: f.batcher.closing)
    status, data, headers = await post(http, gw, envelope(am_alert("Late")))
    assert status == 503 and data["error"]["code"] == "intake_overloaded"  # nothing new taken
    assert headers.get("Retry-After") == "1"
    await asyncio.sleep(0.1)
    assert not stopping.done()  # it waits for the pending batch
    gate.open()
    await stopping
    assert (await first)[0] == 200
    assert [fut.result()[0][0]["result"] for fut in futures] == ["queued"] * 2
    assert [r["alertname"] for r in await intake_rows(gw)] == ["First", "P0", "P1"]
    assert gate.sizes == [1, 2]


def make_hooks(f: AlertsFeature, spec: list[list[tuple[str, ...]]], run: str = "") -> list[Any]:
    """Webhooks as the intake queues them: each a list of (name, status, startsAt) alerts."""
    now = f.clock.now()
    intake = f.cfg.paths[0]
    hooks = []
    for alerts in spec:
        labels = {"run": run} if run else {}
        body = envelope(*(am_alert(*a, **labels) for a in alerts))
        payload = parse_payload(body, now=now, formats=intake.formats, mapping=intake.mapping)
        plans = [f._inline_plan(a, f.mode, now) for a in payload.alerts]
        hooks.append(Webhook(payload.alerts, payload.starts_given, plans, f.mode, now, intake))
    return hooks


@st.composite
def webhooks_and_cuts(draw: st.DrawFn) -> tuple[list[list[tuple[str, str, str]]], list[int]]:
    """Webhooks of 1-3 alerts over a small alphabet (so that repeats, resolves and re-fires
    meet in one batch), and where the batches are cut."""
    alert = st.tuples(
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from(["firing", "resolved"]),
        st.sampled_from(["2026-11-21T21:38:32Z", "2026-11-21T21:40:00Z"]),
    )
    hooks = draw(st.lists(st.lists(alert, min_size=1, max_size=3), min_size=1, max_size=8))
    cuts = draw(st.lists(st.integers(1, len(hooks)), max_size=4, unique=True))
    return hooks, sorted(cuts)


async def test_any_batching_answers_as_one_by_one(ag, store) -> None:
    """Property: cut a sequence of webhooks into batches anywhere; every alert gets the answer
    it gets when each webhook commits alone (dedup in the batch and against the store)."""
    # No history copy: a delivery engine retrying it would draw on `random` meanwhile, which
    # Hypothesis, generating in its thread, reports.
    gw = await ag.start({"routing": {"targets": ["slack"]}}, store=store)
    f = feature(gw)
    loop = asyncio.get_running_loop()

    async def answers(spec: list[list[tuple[str, str, str]]], cuts: list[int], run: str) -> Any:
        hooks = make_hooks(f, spec, run)  # type: ignore[arg-type]
        out = []
        for lo, hi in zip([0, *cuts], [*cuts, len(hooks)], strict=True):
            if lo < hi:
                out += await f._commit_batch(hooks[lo:hi])
        return [[(r["alertname"], r["status"], r["result"]) for r in res] for res, _ in out]

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(webhooks_and_cuts())
    def prop(case: tuple[list[list[tuple[str, str, str]]], list[int]]) -> None:
        spec, cuts = case
        alone = list(range(1, len(spec)))

        def run(c: list[int]) -> Any:
            coro = answers(spec, c, uuid.uuid4().hex)
            return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

        assert run(cuts) == run(alone)

    await asyncio.to_thread(prop)
