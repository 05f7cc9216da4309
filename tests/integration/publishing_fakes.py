"""Small PagerDuty, Slack, Rootly and webhook servers on 127.0.0.1 for the publishing tests.

Each checks every request against the documented format and answers as the real service
does; what fails a check is answered 400 and listed in `problems`, so a test asserts
`problems == []`. `script` makes the next answers fail (`[503, 503]`, `[(429, "2")]`).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import uuid
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

_HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


def _rfc3339(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


class FakeService:
    """Shared plumbing: a runner on a free port, scripted failures, received requests."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[dict[str, Any]] = []  # every request: path, headers, body
        self.problems: list[str] = []
        self.script: list[int | tuple[int, str]] = []  # next answers to fail with
        self.down = False  # answer 503 to everything
        self.hold: asyncio.Event | None = None  # when set, requests wait for it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> FakeService:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _receive(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """Record the request; the scripted failure to answer, if any."""
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
            self.problems.append(f"{request.path}: body is not JSON")
        self.requests.append(
            {"method": request.method, "path": request.path, "headers": dict(request.headers),
             "body": body}
        )  # fmt: skip
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            return body, web.json_response({"error": "down"}, status=503)
        if self.script:
            step = self.script.pop(0)
            status, retry_after = step if isinstance(step, tuple) else (step, None)
            headers = {"Retry-After": retry_after} if retry_after else {}
            return body, web.json_response({"error": "scripted"}, status=status, headers=headers)
        return body, None

    def fail(self, where: str, problem: str) -> web.Response:
        self.problems.append(f"{where}: {problem}")
        return web.json_response({"status": "invalid event", "errors": [problem]}, status=400)


class FakePagerDuty(FakeService):
    """Events API v2 (`POST /v2/enqueue`): 202 with the dedup key, 400 for a bad event."""

    SEVERITIES = ("critical", "error", "warning", "info")
    TOP = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client",
           "client_url"}  # fmt: skip
    PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class",
               "custom_details"}  # fmt: skip

    def __init__(self, routing_key: str = "R0UTINGKEY0123456789") -> None:
        super().__init__()
        self.routing_key = routing_key
        self.accepted: list[dict[str, Any]] = []
        self.open: dict[str, dict[str, Any]] = {}  # dedup_key -> the triggering event
        self.triggers: Counter[str] = Counter()
        self.resolves: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self.enqueue)
        return app

    async def enqueue(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        if request.content_type != "application/json":
            return self.fail("content-type", request.content_type)
        if not isinstance(body, dict):
            return self.fail("body", "not an object")
        unknown = set(body) - self.TOP
        if unknown:
            return self.fail("body", f"unknown keys {sorted(unknown)}")
        if body.get("routing_key") != self.routing_key:
            return self.fail("routing_key", "wrong or missing")
        action = body.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            return self.fail("event_action", repr(action))
        key = body.get("dedup_key")
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            return self.fail("dedup_key", "1-255 characters")
        if action == "trigger":
            problem = self._check_payload(body.get("payload"))
            if problem:
                return self.fail("payload", problem)
            for link in body.get("links", []):
                if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                    return self.fail("links", "items need href")
            self.triggers[key] += 1
            self.open[key] = body
        else:
            self.resolves[key] += 1
            self.open.pop(key, None)
        self.accepted.append(body)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status=202
        )

    def _check_payload(self, payload: object) -> str | None:
        if not isinstance(payload, dict):
            return "missing"
        unknown = set(payload) - self.PAYLOAD
        if unknown:
            return f"unknown keys {sorted(unknown)}"
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 1 <= len(summary) <= 1024:
            return "summary: 1-1024 characters"
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            return "source: required"
        if payload.get("severity") not in self.SEVERITIES:
            return f"severity: one of {self.SEVERITIES}"
        if "timestamp" in payload and not _rfc3339(payload["timestamp"]):
            return "timestamp: ISO 8601"
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            return "custom_details: an object"
        return None


def check_blocks(blocks: object) -> str | None:
    """Block Kit limits for the block types the gateway sends."""
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return "blocks: 1-50 blocks"
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 1 <= len(text.get("text", "")) <= 150:
                return f"blocks[{i}]: header needs plain_text of 1-150 characters"
        elif kind == "section":
            fields = block.get("fields")
            text = block.get("text")
            if fields is None and text is None:
                return f"blocks[{i}]: section needs text or fields"
            if fields is not None:
                if len(fields) > 10:
                    return f"blocks[{i}]: at most 10 fields"
                for f in fields:
                    if f.get("type") not in ("mrkdwn", "plain_text") or len(f["text"]) > 2000:
                        return f"blocks[{i}]: bad field"
            if text is not None and len(text.get("text", "")) > 3000:
                return f"blocks[{i}]: text over 3000"
        elif kind == "actions":
            for el in block.get("elements", []):
                if el.get("type") != "button" or el.get("text", {}).get("type") != "plain_text":
                    return f"blocks[{i}]: actions hold buttons with plain_text"
                if not str(el.get("url", "")).startswith(("http://", "https://")):
                    return f"blocks[{i}]: button url"
        elif kind == "context":
            if not 1 <= len(block.get("elements", [])) <= 10:
                return f"blocks[{i}]: context needs 1-10 elements"
        elif kind != "divider":
            return f"blocks[{i}]: unknown type {kind!r}"
    return None


def check_message(body: object) -> str | None:
    if not isinstance(body, dict):
        return "not an object"
    if not isinstance(body.get("text"), str) or not body["text"]:
        return "text: the notification fallback is required with blocks"
    for att in body.get("attachments", []):
        if not _HEX_COLOUR.fullmatch(str(att.get("color", ""))):
            return "attachments[].color: #RRGGBB"
        problem = check_blocks(att.get("blocks"))
        if problem:
            return problem
    if "blocks" in body:
        return check_blocks(body["blocks"])
    return None


class FakeSlack(FakeService):
    """An incoming webhook (`POST /services/T/B/X` -> "ok") and the Web API's chat methods."""

    HOOK = "/services/T000/B000/XXXXSECRETXXXX"

    def __init__(self, bot_token: str = "xoxb-SECRET-BOT-TOKEN") -> None:
        super().__init__()
        self.bot_token = bot_token
        self.messages: dict[str, dict[str, Any]] = {}  # ts -> message
        self.posted: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.hook_messages: list[dict[str, Any]] = []
        self._ts = 1_700_000_000
        self.odd_ts: list[str] = []  # the next ts values to answer instead of well-formed ones

    @property
    def hook_url(self) -> str:
        return self.url + self.HOOK

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.HOOK, self.hook)
        app.router.add_post("/api/chat.postMessage", self.post_message)
        app.router.add_post("/api/chat.update", self.update)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        problem = check_message(body)
        if problem:
            self.problems.append(f"hook: {problem}")
            return web.Response(status=400, text="invalid_blocks")
        self.hook_messages.append(body)
        return web.Response(text="ok")

    def _api_error(self, request: web.Request, body: object) -> str | None:
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return "invalid_auth"
        problem = check_message(body)
        if problem:
            self.problems.append(f"{request.path}: {problem}")
            return "invalid_blocks"
        return None

    async def post_message(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        error = self._api_error(request, body)
        if error:
            return web.json_response({"ok": False, "error": error})
        if not body.get("channel"):
            return web.json_response({"ok": False, "error": "channel_not_found"})
        self._ts += 1
        ts = self.odd_ts.pop(0) if self.odd_ts else f"{self._ts}.000100"
        if body.get("thread_ts"):
            if body["thread_ts"] not in self.messages:
                return web.json_response({"ok": False, "error": "thread_not_found"})
            self.replies.append(body)
        else:
            self.messages[ts] = body
            self.posted.append(body)
        return web.json_response({"ok": True, "channel": "C0CHANNEL", "ts": ts})

    async def update(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        error = self._api_error(request, body)
        if error:
            return web.json_response({"ok": False, "error": error})
        if body.get("ts") not in self.messages or body.get("channel") != "C0CHANNEL":
            return web.json_response({"ok": False, "error": "message_not_found"})
        self.messages[body["ts"]] = body
        self.updates.append(body)
        return web.json_response({"ok": True, "channel": body["channel"], "ts": body["ts"]})


class FakeRootly(FakeService):
    """JSON:API alerts and incidents: create (201, data.id), resolve (200; 404 when unknown)."""

    SOURCES = ("alertmanager", "api", "generic_webhook", "rootly")

    def __init__(self, token: str = "rootly-SECRET-token") -> None:
        super().__init__()
        self.token = token
        self.alerts: dict[str, dict[str, Any]] = {}
        self.incidents: dict[str, dict[str, Any]] = {}
        self.resolved: list[str] = []
        self.ids: list[object] = []  # the next ids to hand out instead of UUIDs (any JSON)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/alerts", self.create_alert)
        app.router.add_post("/v1/alerts/{id}/resolve", self.resolve_alert)
        app.router.add_post("/v1/incidents", self.create_incident)
        app.router.add_put("/v1/incidents/{id}/resolve", self.resolve_incident)
        return app

    def _check(self, request: web.Request, body: object, kind: str) -> str | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return "unauthorized"
        if request.content_type != "application/vnd.api+json":
            return f"content-type {request.content_type}"
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != kind:
            return f"data.type must be {kind}"
        if not isinstance(data.get("attributes"), dict):
            return "data.attributes: an object"
        return None

    async def create_alert(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        problem = self._check(request, body, "alerts")
        if problem is None:
            a = body["data"]["attributes"]
            if a.get("source") not in self.SOURCES:
                problem = "source"
            elif not isinstance(a.get("summary"), str) or not a["summary"]:
                problem = "summary: required"
            elif any(set(x) != {"key", "value"} for x in a.get("labels", [])):
                problem = "labels: [{key, value}]"
            elif "started_at" in a and not _rfc3339(a["started_at"]):
                problem = "started_at"
        if problem:
            return self.fail("alerts", problem)
        a = body["data"]["attributes"]
        for known_id, known in self.alerts.items():  # Rootly's deduplication by key
            if known["deduplication_key"] == a.get("deduplication_key") and not known.get("done"):
                return web.json_response({"data": {"id": known_id, "type": "alerts"}}, status=201)
        new_id = self.ids.pop(0) if self.ids else str(uuid.uuid4())
        self.alerts[str(new_id)] = dict(a)
        return web.json_response(
            {"data": {"id": new_id, "type": "alerts", "attributes": {"status": "open"}}},
            status=201,
        )

    async def resolve_alert(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        problem = self._check(request, body, "alerts")
        if problem:
            return self.fail("resolve", problem)
        alert_id = request.match_info["id"]
        if alert_id not in self.alerts:
            return web.json_response({"errors": [{"title": "not found"}]}, status=404)
        self.alerts[alert_id]["done"] = True
        self.resolved.append(alert_id)
        return web.json_response({"data": {"id": alert_id, "type": "alerts"}})

    async def create_incident(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        problem = self._check(request, body, "incidents")
        if problem is None and not body["data"]["attributes"].get("title"):
            problem = "title: required"
        if problem:
            return self.fail("incidents", problem)
        new_id = str(uuid.uuid4())
        self.incidents[new_id] = body["data"]["attributes"]
        return web.json_response({"data": {"id": new_id, "type": "incidents"}}, status=201)

    async def resolve_incident(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        problem = self._check(request, body, "incidents")
        if problem:
            return self.fail("resolve", problem)
        if request.match_info["id"] not in self.incidents:
            return web.json_response({"errors": [{"title": "not found"}]}, status=404)
        self.resolved.append(request.match_info["id"])
        return web.json_response({"data": {"id": request.match_info["id"]}})


class FakeWebhook(FakeService):
    """Takes the Alertmanager v4 envelope at `POST /hook`; counts deliveries per key."""

    ENVELOPE = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                "commonLabels", "commonAnnotations", "externalURL", "alerts"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.accepted: list[dict[str, Any]] = []
        self.keys: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        body, scripted = await self._receive(request)
        if scripted is not None:
            return scripted
        if not isinstance(body, dict) or not set(body) >= self.ENVELOPE:
            return self.fail("hook", "not an Alertmanager v4 envelope")
        if body["version"] != "4" or len(body["alerts"]) != 1:
            return self.fail("hook", "version 4 with one alert")
        self.accepted.append(body)
        self.keys[request.headers.get("Idempotency-Key", "")] += 1
        return web.json_response({"status": "ok"})
