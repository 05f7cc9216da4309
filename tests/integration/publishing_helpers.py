"""A gateway with a `publishing` section, and alerts put straight into its outbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cutover.alerts.model import Alert, Classification
from cutover.app import start_gateway
from cutover.core.clock import Clock
from cutover.core.db import Database
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from cutover.publishing.api import PublishingFeature
from cutover.publishing.delivery import DeliveryEngine
from cutover.publishing.outbox import Outbox


def config(
    tmp_path: Path,
    publishing: dict[str, Any],
    backends: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    backends = backends or {"history": "http://127.0.0.1:9"}
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": "off",
        "access_log": {"enabled": False},
        "storage": f"sqlite:///{tmp_path / 'state.db'}",
        "backends": {n: {"url": u, "health": None} for n, u in backends.items()},
        "routes": [
            {
                "name": "default",
                "match": {"path_prefix": "/"},
                "split": {n: (100 if i == 0 else 0) for i, n in enumerate(backends)},
                "fallback": list(backends)[1:],
            }
        ],
        "publishing": publishing,
    }
    data.update(extra)
    return data


async def start(data: dict[str, Any], clock: Clock | None = None) -> Gateway:
    return await start_gateway(parse_config(data, "test.yaml"), clock)


def feature(gw: Gateway) -> PublishingFeature:
    return next(f for f in gw.features if isinstance(f, PublishingFeature))


def engine(gw: Gateway) -> DeliveryEngine:
    eng = feature(gw).engine
    assert eng is not None
    return eng


def make_alert(
    fingerprint: str,
    status: str = "firing",
    *,
    classified: bool = True,
    **labels: str,
) -> Alert:
    classification = (
        Classification(
            "critical",
            "infrastructure",
            0.92,
            "disk almost full",
            ("free disk space", "page on-call"),
            "rules",
        )
        if classified
        else None
    )
    return Alert(
        fingerprint=fingerprint,
        status=status,  # type: ignore[arg-type]
        labels=MappingProxyType(
            {"alertname": "DiskFull", "severity": "critical", "namespace": "prod", **labels}
        ),
        annotations=MappingProxyType(
            {"summary": "Disk is 95% full", "runbook_url": "https://runbooks.example/disk"}
        ),
        starts_at="2026-11-20T10:00:00Z",
        ends_at="2026-11-20T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        generator_url="http://prometheus.example/graph?g0.expr=disk",
        classification=classification,
    )


async def enqueue(gw: Gateway, alert: Alert, targets: list[str]) -> list[int]:
    db = await gw.database()
    outbox = Outbox(db, gw.clock)
    async with db.transaction() as tx:
        return await outbox.enqueue(tx, alert, targets, now=gw.clock.now())


async def pending(gw: Gateway) -> dict[str, dict[str, int]]:
    db = await gw.database()
    return await Outbox(db, gw.clock).counts()


class CountQueries:
    """Counts the outbox's per-target count (`GROUP BY target, state`) run on one store, by
    wrapping that `Database` object's `fetch`; `hold` makes those queries wait for `release`."""

    SQL = "GROUP BY target, state"

    def __init__(self, db: Database) -> None:
        self.seen = 0
        self.entered = asyncio.Event()  # a count reached the store
        self._open = asyncio.Event()
        self._open.set()
        fetch = db.fetch

        async def counted(sql: str, *args: Any) -> list[dict[str, Any]]:
            if self.SQL in sql:
                self.seen += 1
                self.entered.set()
                await self._open.wait()
            return await fetch(sql, *args)

        db.fetch = counted  # type: ignore[method-assign]

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()
