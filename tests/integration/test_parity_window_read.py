"""A mirrored route's window reads the store (`WindowBook.read`; here the gateway's own, with
`mirror.process: false`) without holding up the primary's requests: what the window holds is
not decoded again, and what is new is taken a slice at a time. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from cutover.bench.window_read import config
from cutover.parity.book import READ_SLICE
from cutover.parity.noise import Sample
from cutover.parity.results_store import insert_results
from cutover.parity.shadow import ParityFeature
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from tests.conftest import wait_for

FIELDS = orjson.dumps({"$.alerts[0].labels.severity": "critical"}).decode()
SAMPLE = Sample("GET /alerts/{id}", orjson.loads(FIELDS), None)


def row(ts: float) -> tuple[Any, ...]:
    """A stored result as the mirror writes it (ts, route, endpoint, method, path, backends,
    statuses, fields, noise fields, differences)."""
    return (ts, "default", "GET /alerts/{id}", "GET", "/alerts/1", "primary", "candidate",
            200, 200, FIELDS, None, "[]")  # fmt: skip


@pytest.fixture
async def parity(storage: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ParityFeature]:
    """A gateway's parity feature on `storage`, one mirrored route; its own refresh loop reads
    once at start, then only when a test calls for a read."""
    monkeypatch.setattr("cutover.parity.shadow.REFRESH_SECONDS", 3600.0)
    data = config(storage, window=1000)
    gw = Gateway(parse_config(data, "test.yaml"), None, (ParityFeature,))
    await gw.start()
    try:
        (feature,) = [f for f in gw.features if isinstance(f, ParityFeature)]
        await wait_for(lambda: feature.book.windows["default"].top is not None)  # the first read
        yield feature
    finally:
        await gw.close()


def count_decodes(parity: ParityFeature, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    decoded: list[int] = []
    sample = parity.book._sample

    def counted(stored: dict[str, Any]) -> Sample:
        decoded.append(int(stored["id"]))
        return sample(stored)

    monkeypatch.setattr(parity.book, "_sample", counted)
    return decoded


async def test_a_worker_alone_decodes_none_of_its_own_results_again(
    parity: ParityFeature, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker stores and books 300 results: its reads, partial and whole, find them all in
    its window already; none is decoded again, and a whole reload keeps the window as it is."""
    window = parity.book.windows["default"]
    ids = await insert_results(await parity._database(), [row(i) for i in range(300)])
    for i in ids:
        window.append((i, SAMPLE))  # booked, as the mirror books what it stored
    decoded = count_decodes(parity, monkeypatch)
    await parity.book.read("default", window, full=False)
    assert window.top == max(ids)
    await parity.book.read("default", window, full=True)
    assert parity.book.windows["default"] is window
    assert window.ids() == ids and window.top == max(ids)
    assert decoded == []


async def test_another_workers_results_are_taken_a_slice_at_a_time(
    parity: ParityFeature, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker stored 5 x `READ_SLICE` results: the read decodes each once and adds them
    a slice at a time, the loop's other work (a request's callbacks) running in between."""
    window = parity.book.windows["default"]
    before = len(window)
    ids = await insert_results(await parity._database(), [row(i) for i in range(5 * READ_SLICE)])
    decoded = count_decodes(parity, monkeypatch)
    seen: list[int] = []

    async def probe() -> None:
        while True:
            seen.append(len(window))
            await asyncio.sleep(0)

    prober = asyncio.create_task(probe())
    await asyncio.sleep(0)
    try:
        await parity.book.read("default", window, full=False)
    finally:
        prober.cancel()
    assert window.ids()[before:] == ids and window.top == max(ids)
    assert sorted(decoded) == ids
    between = sorted({n - before for n in seen} - {0, len(ids)})
    assert between == [READ_SLICE * k for k in range(1, 5)]


async def test_a_whole_reload_drops_what_was_never_stored_and_keeps_the_rest(
    parity: ParityFeature, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result this worker could not store (no row id) leaves the window at the next whole
    reload; the stored ones stay, in order, and only another worker's are decoded."""
    db = await parity._database()
    window = parity.book.windows["default"]
    own = await insert_results(db, [row(i) for i in range(3)])
    for i in own[:2]:
        window.append((i, SAMPLE))
    window.append((None, SAMPLE))  # compared, but the store refused it
    window.append((own[2], SAMPLE))
    other = await insert_results(db, [row(i) for i in range(2)])
    decoded = count_decodes(parity, monkeypatch)
    await parity.book.read("default", window, full=True)
    reloaded = parity.book.windows["default"]
    assert reloaded.ids() == [*own, *other] and reloaded.top == max(other)
    assert sorted(decoded) == other
