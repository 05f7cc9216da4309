"""A target whose refusal carries a NUL (a valid UTF-8 byte, but no PostgreSQL text) has it
stored escaped in the job's last error, on SQLite and PostgreSQL: the job is dead-lettered as
any refused job, instead of its settlement failing in the store and the job staying leased."""

from __future__ import annotations

from aiohttp import web

from tests.conftest import wait_for
from tests.integration.publishing_fakes import FakeService
from tests.integration.publishing_helpers import config, enqueue, feature, make_alert, start


class NulTarget(FakeService):
    """Refuses every alert with a body that holds a NUL."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.refuse)
        return app

    async def refuse(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests.append({"path": request.path})
        return web.Response(status=400, body=b"bad\x00alert")


async def test_a_refusal_with_nul_is_dead_lettered(tmp_path, storage: str) -> None:  # type: ignore[no-untyped-def]
    target = await NulTarget().start()
    try:
        hook = {"name": "hook", "type": "webhook", "url": f"{target.url}/hook"}
        gw = await start(config(tmp_path, {"targets": [hook]}, storage=storage))
        try:
            await enqueue(gw, make_alert("fp-nul"), ["hook"])
            outbox = feature(gw).outbox
            assert outbox is not None
            dead: list = []

            async def dead_lettered() -> bool:
                dead[:] = await outbox.dead_letters(limit=10)
                return bool(dead)

            for _ in range(200):
                if await dead_lettered():
                    break
                await wait_for(lambda: True, 0.05)
            (job,) = dead
            assert job.last_error is not None and "bad\\x00alert" in job.last_error
        finally:
            await gw.close()
    finally:
        await target.stop()
