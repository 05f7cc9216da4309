"""The dashboard in a real browser (headless Chromium over the DevTools Protocol, `tests.chromium`),
with a gateway in front of two sample backends and traffic flowing.

The screenshot the README shows is made here: set `CUTOVER_DASHBOARD_SCREENSHOT=docs/dashboard.png`
and run `python -m pytest tests/integration/test_dashboard_browser.py -k screenshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from cutover.proxy.config import parse_config
from cutover.proxy.dashboard import DashboardFeature
from cutover.proxy.server import Gateway
from cutover.publishing.outbox import Outbox
from tests.chromium import Browser, browser, decode_png
from tests.conftest import EchoBackend, wait_for
from tests.integration.alerts_helpers import am_alert, envelope
from tests.integration.canary_helpers import TOKEN, admin, canary_config, start, started
from tests.integration.publishing_helpers import make_alert
from tests.quiescence import assert_quiescent

TOKEN_KEY = "cutover.admin-token"
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@dataclass
class Scene:
    gw: Gateway
    data: dict[str, Any]
    sent: int = 0

    @property
    def page(self) -> str:
        assert self.gw.admin_url is not None
        return self.gw.admin_url + "/dashboard"


async def _traffic(scene: Scene, stop: asyncio.Event) -> None:
    """About 40 requests a second (a few to the legacy API), bounded in count, until `stop`."""
    async with aiohttp.ClientSession() as s:
        while not stop.is_set() and scene.sent < 20_000:
            paths = ["/api/items", "/api/items", "/api/items", "/legacy/report"]
            for path in paths:
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(scene.gw.url + path) as r:
                        await r.read()
                scene.sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


@contextlib.asynccontextmanager
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    """Two sample backends behind a gateway with a canary (go 10 / python 90), a mirror for
    parity, the compat profile, alert intake, and traffic flowing."""
    go, py = EchoBackend("go"), EchoBackend("python")
    async with started(go, py):
        data = canary_config(
            go,
            py,
            tmp_path,
            split={"go": 10, "python": 90},
            route={"mirror": {"to": "go", "percent": 50}},
            compat={"profile": "builtin:alert-history"},
            alerts={},
        )
        gw = await start(data)
        sc = Scene(gw, data)
        stop = asyncio.Event()
        task = asyncio.create_task(_traffic(sc, stop))
        try:
            yield sc
        finally:
            stop.set()
            await task
            try:
                await assert_quiescent(gw)
                # every page closed: the streams go within a tick or two
                await wait_for(lambda: not dashboard(gw).streams)
            finally:
                await gw.close()


def dashboard(gw: Gateway) -> DashboardFeature:
    return next(f for f in gw.features if isinstance(f, DashboardFeature))


async def logged_in(b: Browser, sc: Scene, token: str = TOKEN) -> None:
    """Open the page with `token` already in this tab's session, and wait for the data."""
    await b.goto(sc.page.replace("/dashboard", "/dashboard/static/favicon.svg"))  # same origin
    await b.evaluate(f"sessionStorage.setItem({TOKEN_KEY!r}, {token!r})")
    await b.goto(sc.page)
    await b.wait("document.querySelector('#conn').dataset.state === 'live'")
    await b.wait("document.querySelector('#routes [data-route=\"default\"]') !== null")


async def prompt_shown(b: Browser) -> bool:
    return bool(
        await b.evaluate(
            "!document.getElementById('login').hidden && document.getElementById('board').hidden"
        )
    )


# -- the tests ------------------------------------------------------------------------------------


async def test_token_prompt_then_live_weights_plots_and_a_screenshot(tmp_path: Path) -> None:
    async with scene(tmp_path) as sc, browser(1280, 800) as b:
        await b.goto(sc.page)
        # Without a token: the prompt, and no data at all.
        await b.wait("!document.getElementById('login').hidden")
        assert await prompt_shown(b)
        text = await b.evaluate("document.body.innerText")
        assert "python" not in text and "go 10" not in text
        assert await b.evaluate("document.querySelectorAll('#routes > *').length") == 0
        b.problems.clear()  # the refused probe (401) is the browser's log line, not the page's

        await b.evaluate(
            f"document.getElementById('token').value = {TOKEN!r};"
            "document.getElementById('login-form').requestSubmit()"
        )
        await b.wait("document.querySelector('#conn').dataset.state === 'live'")
        await b.wait(f"({weights_js()}) === 'go 10 / python 90'")
        assert not await prompt_shown(b)
        assert await b.evaluate("sessionStorage.getItem('cutover.admin-token')") == TOKEN

        # A change made through the API shows within 2 s, without a reload.
        navigations = await b.evaluate("performance.getEntriesByType('navigation').length")
        status, _ = await admin(
            sc.gw, "PUT", "/admin/routes/default/weights", {"go": 25, "python": 75}
        )
        assert status == 200
        changed_at = time.monotonic()
        await b.wait(f"({weights_js()}) === 'go 25 / python 75'", deadline=2.0, interval=0.05)
        assert time.monotonic() - changed_at <= 2.0
        assert await b.evaluate("performance.getEntriesByType('navigation').length") == navigations
        assert await b.evaluate("window.cutoverDashboard.snapshot !== null")

        # The plots have points: requests, latency and the weights over time.
        for plot in ("rps", "errors", "latency", "weights-default"):
            await b.wait(
                f"Number(document.querySelector('[data-plot=\"{plot}\"]')?.dataset.points) > 2"
            )
        await b.wait("document.querySelectorAll('[data-plot=\"rps\"] path.line').length >= 2")
        # The other panels are filled from their features.
        await b.wait("document.querySelector('#canary [data-canary=\"default\"]') !== null")
        await b.wait("document.querySelector('#timeline [data-event-kind=\"weights\"]') !== null")
        await b.wait("document.querySelector('#compat table') !== null")
        await b.wait("document.querySelector('#parity h3') !== null")
        await b.wait("document.querySelector('#publishing table, #publishing p') !== null")

        wanted = os.environ.get("CUTOVER_DASHBOARD_SCREENSHOT")
        await asyncio.sleep(30 if wanted else 3)  # more seconds of points for the picture
        png = await b.screenshot()
        (tmp_path / "dashboard.png").write_bytes(png)
        if wanted:
            Path(wanted).write_bytes(png)
        assert_not_blank(png, 1280, 800)
        assert b.errors() == [], b.errors()


def weights_js() -> str:
    return (
        'document.querySelector(\'#routes [data-route="default"] [data-field="weights"]\')'
        "?.textContent"
    )


def assert_not_blank(png: bytes, width: int, height: int) -> None:
    """The picture has the size asked for and shows something: many colours, and much of it
    not the background."""
    image = decode_png(png)
    assert (image.width, image.height) == (width, height)
    colours: Counter[tuple[int, ...]] = Counter()
    for y in range(0, image.height, 4):
        for x in range(0, image.width, 4):
            colours[image.pixel(x, y)[:3]] += 1
    total = sum(colours.values())
    _, background = colours.most_common(1)[0]
    assert len(colours) >= 20, f"only {len(colours)} colours"
    assert (total - background) / total >= 0.05, "almost everything is the background"


async def test_rollback_confirmed_on_the_page_rolls_back_and_shows_in_the_timeline(
    tmp_path: Path,
) -> None:
    async with scene(tmp_path) as sc, browser() as b:
        await logged_in(b, sc)
        button = 'document.querySelector(\'button[data-action="rollback"][data-route="default"]\')'
        # Cancelled: nothing happens.
        await b.evaluate(f"{button}.click()")
        await b.wait("document.getElementById('confirm').open")
        await b.evaluate("document.getElementById('confirm-cancel').click()")
        await b.wait("!document.getElementById('confirm').open")
        _, routes = await admin(sc.gw, "GET", "/admin/routes")
        assert routes["routes"][0]["weights"] == {"go": 10, "python": 90}

        # Confirmed: rolled back, as the API says, and the timeline shows it.
        await b.evaluate(f"{button}.click()")
        await b.wait("document.getElementById('confirm').open")
        await b.evaluate(
            "document.getElementById('confirm-reason').value = 'p95 looks wrong';"
            "document.getElementById('confirm-ok').click()"
        )
        for _ in range(100):
            _, routes = await admin(sc.gw, "GET", "/admin/routes")
            if routes["routes"][0]["weights"] == {"go": 0, "python": 100}:
                break
            await asyncio.sleep(0.1)
        view = routes["routes"][0]
        assert view["weights"] == {"go": 0, "python": 100}
        assert view["phase"] == "rolled_back" and view["latched"] is True
        assert view["changed_by"] == "operator:admin"
        await b.wait(
            "[...document.querySelectorAll('#timeline li[data-event-kind=\"rollback\"]')]"
            ".some(li => li.textContent.includes('p95 looks wrong'))"
        )
        await b.wait(f"({weights_js()}) === 'go 0 / python 100'")
        _, events = await admin(sc.gw, "GET", "/admin/events?route=default")
        rollback = next(e for e in events["events"] if e["kind"] == "rollback")
        assert rollback["actor"] == "operator:admin"
        assert rollback["reason"].startswith("p95 looks wrong")
        assert b.errors() == [], b.errors()


async def test_a_wrong_or_rotated_token_gets_the_prompt_again(tmp_path: Path) -> None:
    async with scene(tmp_path) as sc, browser() as b:
        await b.goto(sc.page)
        await b.evaluate(f"sessionStorage.setItem({TOKEN_KEY!r}, 'not-the-token')")
        await b.goto(sc.page)
        await b.wait("!document.getElementById('login').hidden")
        assert await prompt_shown(b)
        message = await b.evaluate("document.getElementById('login-error').textContent")
        assert "refused" in message
        assert await b.evaluate(f"sessionStorage.getItem({TOKEN_KEY!r})") is None
        assert await b.evaluate("document.querySelectorAll('#routes > *').length") == 0

        # A good token, then the gateway rotates it: the open page asks again.
        await b.evaluate(
            f"document.getElementById('token').value = {TOKEN!r};"
            "document.getElementById('login-form').requestSubmit()"
        )
        await b.wait("document.querySelector('#conn').dataset.state === 'live'")
        data = dict(sc.data, admin={"listen": "127.0.0.1:0", "token": "rotated-token-5a1c9e"})
        await sc.gw.reload(parse_config(data, "test.yaml"))
        await b.wait("!document.getElementById('login').hidden", deadline=15.0)
        assert await prompt_shown(b)
        assert await b.evaluate("document.querySelectorAll('#routes > *').length") == 0
        text = await b.evaluate("document.body.innerText")
        for trace in ("Traceback", "TypeError", "SyntaxError", "at async", "undefined"):
            assert trace not in text
        assert [p for p in b.errors(allow_network=True)] == [], b.errors()


async def test_hostile_values_are_shown_as_text(tmp_path: Path) -> None:
    async with scene(tmp_path) as sc, browser() as b, aiohttp.ClientSession() as s:
        alert = am_alert("Hostile", note=HOSTILE, severity="critical")
        async with s.post(sc.gw.url + "/webhook/proxy", data=orjson.dumps(envelope(alert))) as r:
            assert r.status < 300, await r.text()
        status, _ = await admin(
            sc.gw, "POST", "/admin/pause", {"route": "default", "reason": HOSTILE}
        )
        assert status == 200
        await logged_in(b, sc)
        await b.wait("document.querySelector('#alerts .labels')?.textContent.includes('<script>')")
        await b.wait("document.querySelector('#timeline')?.textContent.includes('<img src=x')")
        assert (
            await b.evaluate("document.querySelectorAll('#board script, #board img').length") == 0
        )
        assert await b.evaluate("typeof window.__pwned") == "undefined"
        assert b.errors() == [], b.errors()


async def test_the_page_shows_a_lost_stream_and_reconnects_by_itself(tmp_path: Path) -> None:
    async with scene(tmp_path) as sc, browser() as b:
        await logged_in(b, sc)
        first = await b.evaluate("window.cutoverDashboard.snapshot.at")
        dashboard(sc.gw).end_streams()
        await b.wait("document.querySelector('#conn').dataset.state === 'reconnecting'")
        assert "reconnecting" in await b.evaluate("document.querySelector('#conn').textContent")
        await b.wait("document.querySelector('#conn').dataset.state === 'live'", deadline=15.0)
        await b.wait(f"window.cutoverDashboard.snapshot.at > {first}")
        assert b.errors() == [], b.errors()


async def test_phone_width_and_dark_scheme(tmp_path: Path) -> None:
    async with scene(tmp_path) as sc, browser(390, 844) as b:
        await logged_in(b, sc)
        await b.wait("Number(document.querySelector('[data-plot=\"rps\"]')?.dataset.points) > 0")
        # nothing wider than the phone: tables scroll inside their own box
        assert await b.evaluate("document.documentElement.scrollWidth") <= 390
        light = await b.evaluate("getComputedStyle(document.body).backgroundColor")
        await b.send(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        dark = await b.evaluate("getComputedStyle(document.body).backgroundColor")
        assert light != dark
        # every action is a real button, reachable with the keyboard
        kinds = await b.evaluate(
            "[...document.querySelectorAll('[data-action]')].map(e => e.tagName + ':' + e.tabIndex)"
        )
        assert kinds and all(k == "BUTTON:0" for k in kinds), kinds
        assert b.errors() == [], b.errors()


async def test_a_dead_letter_replayed_from_the_page_is_pending_again(tmp_path: Path) -> None:
    async with scene(tmp_path) as sc, browser() as b:
        db = await sc.gw.database()
        outbox = Outbox(db, sc.gw.clock)
        async with db.transaction() as tx:
            (job_id,) = await outbox.enqueue(tx, make_alert("fp-dash-1"), ["ghost"], now=0.0)
        job = await outbox.get(job_id)
        assert job is not None
        await outbox.dead_letter(job, "HTTP 500 from ghost")
        await logged_in(b, sc)
        button = f'document.querySelector(\'button[data-action="replay"][data-job="{job_id}"]\')'
        await b.wait(f"{button} !== null")
        await b.evaluate(f"{button}.click()")
        await b.wait("document.getElementById('confirm').open")
        await b.evaluate("document.getElementById('confirm-ok').click()")
        for _ in range(100):
            job = await outbox.get(job_id)
            if job is not None and job.state == "pending":
                break
            await asyncio.sleep(0.1)
        assert job is not None and job.state == "pending"
        await b.wait(f"{button} === null")  # gone from the dead letters shown
        assert b.errors() == [], b.errors()
