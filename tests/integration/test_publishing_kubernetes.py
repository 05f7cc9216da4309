"""Target discovery through the real kubernetes-asyncio client against a fake API server."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import aiohttp
import orjson
import pytest
import trustme
from aiohttp import web

from cutover.publishing import discovery
from tests.conftest import wait_for
from tests.integration.publishing_fakes import FakeWebhook
from tests.integration.publishing_helpers import config, enqueue, feature, make_alert, start
from tests.integration.task_helpers import Fault, assert_restarted, fast_restarts, task_failures


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _selected(selector: str, labels: dict[str, str]) -> bool:
    for part in filter(None, (p.strip() for p in selector.split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif part not in labels:
            return False
    return True


class FakeKubernetes:
    """`GET /api/v1/namespaces/{ns}/secrets`: a SecretList, or newline-delimited watch events.

    `answers`: what the next watch requests get instead of events, one each: "list" (a
    SecretList, as an intermediary that ignores `watch=true` answers), "error-empty" (an ERROR
    event whose object has no field), "gone-bare" (ERROR 410 without reason or message).
    `hold`: watches stay open and silent (changes are seen by lists only)."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.hold = False
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 100
        self.lists: list[tuple[str, str]] = []
        self.watches: list[tuple[str, str, asyncio.Queue[dict[str, Any] | None]]] = []
        self.watch_requests = 0
        self.forbidden: set[str] = set()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.bad_requests: list[str] = []

    async def start(self) -> FakeKubernetes:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/secrets", self.secrets_endpoint)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for *_, queue in self.watches:
            queue.put_nowait(None)
        if self.runner is not None:
            await self.runner.cleanup()

    def kubeconfig(self, path) -> str:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{self.port}'}}}}]\n"
            "users: [{name: tester, user: {}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: tester}}]\n"
            "current-context: fake\n"
        )
        return str(path)

    # -- the cluster's state ------------------------------------------------------------------

    def put(self, ns: str, name: str, labels: dict[str, str], data: dict[str, str]) -> None:
        self.version += 1
        old = self.secrets.get((ns, name))
        secret = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "resourceVersion": str(self.version)},
            "type": "Opaque",
            "data": data,
        }  # fmt: skip
        self.secrets[(ns, name)] = secret
        for wns, selector, queue in self.watches:
            if wns != ns:
                continue
            was = old is not None and _selected(selector, old["metadata"]["labels"])
            now = _selected(selector, labels)
            if now:
                queue.put_nowait({"type": "MODIFIED" if was else "ADDED", "object": secret})
            elif was:
                queue.put_nowait({"type": "DELETED", "object": secret})

    def delete(self, ns: str, name: str) -> None:
        self.version += 1
        secret = self.secrets.pop((ns, name))
        for wns, selector, queue in self.watches:
            if wns == ns and _selected(selector, secret["metadata"]["labels"]):
                queue.put_nowait({"type": "DELETED", "object": secret})

    def delete_quietly(self, ns: str, name: str) -> None:
        """Gone from the cluster while no watch told anyone (a missed DELETED event)."""
        self.version += 1
        del self.secrets[(ns, name)]

    def expire_watches(self, bare: bool = False) -> None:
        """Every open watch gets ERROR 410 Gone (its resourceVersion is too old); `bare`: a
        Status with its code only."""
        gone = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "code": 410, "reason": "Expired",
                "message": "too old resource version"}}  # fmt: skip
        if bare:
            gone = {"type": "ERROR", "object": {"code": 410}}
        for *_, queue in self.watches:
            queue.put_nowait(gone)
            queue.put_nowait(None)

    # -- the API ------------------------------------------------------------------------------

    async def secrets_endpoint(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        selector = request.query.get("labelSelector", "")
        if ns in self.forbidden:
            return web.json_response(
                {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                 "message": f'secrets is forbidden in the namespace "{ns}"'},
                status=403,
            )  # fmt: skip
        if request.query.get("watch", "").lower() in ("true", "1"):
            answer = self.answers.pop(0) if self.answers else None
            if answer == "list":
                return self._list(ns, selector)
            if answer is not None:
                event = {
                    "error-empty": {"type": "ERROR", "object": {}},
                    "gone-bare": {"type": "ERROR", "object": {"code": 410}},
                }[answer]
                body = orjson.dumps(event) + b"\n"
                return web.Response(body=body, content_type="application/json")
            return await self._watch(request, ns, selector)
        self.lists.append((ns, selector))
        return self._list(ns, selector)

    def _list(self, ns: str, selector: str) -> web.Response:
        items = [
            s
            for (sns, _), s in sorted(self.secrets.items())
            if sns == ns and _selected(selector, s["metadata"]["labels"])
        ]
        return web.json_response(
            {"kind": "SecretList", "apiVersion": "v1",
             "metadata": {"resourceVersion": str(self.version)}, "items": items}
        )  # fmt: skip

    async def _watch(self, request: web.Request, ns: str, selector: str) -> web.StreamResponse:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.watch_requests += 1
        entry = (ns, selector, queue)
        self.watches.append(entry)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            timeout = float(request.query.get("timeoutSeconds", "300"))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), None if self.hold else timeout)
                except TimeoutError:
                    break
                if event is None:
                    break
                if not self.hold:
                    await resp.write(orjson.dumps(event) + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watches.remove(entry)
        return resp


@pytest.fixture
async def k8s():
    fake = await FakeKubernetes().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def hook():
    svc = await FakeWebhook().start()
    yield svc
    await svc.stop()


async def _targets(gw) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/publishing/targets") as r:
        return await r.json()


def _seed(k8s: FakeKubernetes, hook: FakeWebhook) -> None:
    # layout kebab-case, the original code's selector
    k8s.put("default", "pd-kebab", {"alert-history.io/target": "true"},
            {"target-name": b64("pd-k"), "format": b64("pagerduty"),
             "routing-key": b64("PDKEY-kebab-0001")})  # fmt: skip
    # layout snake_case, the Go defaults' selector
    k8s.put("default", "slack-snake", {"publishing-target": "true"},
            {"name": b64("slack-s"), "type": b64("slack"),
             "url": b64("https://hooks.slack.example/services/T/B/SECRETHOOK")})  # fmt: skip
    # layout config (JSON), the seeds' selector, another namespace
    k8s.put("monitoring", "wh-config", {"alert-history.io/publish-target": "true"},
            {"config": b64(orjson.dumps({"name": "wh-c", "type": "webhook",
                                         "url": hook.url + "/hook"}).decode())})  # fmt: skip
    # broken: a bad URL, and a value that is not base64
    k8s.put("default", "broken", {"publishing-target": "true"},
            {"type": b64("webhook"), "url": b64("not a url")})  # fmt: skip
    k8s.put("default", "garbled", {"alert-history.io/target": "true"}, {"url": "!!!"})
    # not selected
    nope = {"name": b64("nope"), "type": b64("webhook"), "url": b64("http://x.example/")}
    k8s.put("default", "unlabelled", {"app": "other"}, nope)


async def test_list_watch_layouts_selectors_and_a_broken_secret(tmp_path, k8s, hook, caplog):
    caplog.set_level(logging.INFO)
    _seed(k8s, hook)
    kube = {"namespaces": ["default", "monitoring"], "kubeconfig": k8s.kubeconfig(tmp_path / "kc")}
    gw = await start(config(tmp_path, {"kubernetes": kube}))
    try:
        registry = feature(gw).registry
        await wait_for(lambda: len(registry.discovered) == 3)
        targets = {t["name"]: t for t in await _targets(gw)}
        assert targets["pd-k"]["type"] == "pagerduty" and targets["pd-k"]["source"] == "kubernetes"
        assert targets["slack-s"]["url"] == "https://hooks.slack.example/services/***"
        assert targets["wh-c"]["origin"] == "monitoring/wh-config"
        assert "nope" not in targets
        assert targets["broken"]["invalid_reason"].startswith("url: ")
        assert targets["garbled"]["invalid_reason"].startswith("url: base64")
        text = caplog.text
        assert "secret default/broken skipped: field 'url'" in text
        assert "PDKEY" not in str(targets) and "SECRETHOOK" not in str(targets)
        assert "PDKEY" not in text and "SECRETHOOK" not in text

        # a discovered target gets alerts
        await enqueue(gw, make_alert("fp-k8s"), ["wh-c"])
        await wait_for(lambda: len(hook.accepted) == 1)

        # watch: add, modify, delete
        await wait_for(lambda: len(k8s.watches) == 6)  # 2 namespaces x 3 selectors
        k8s.put("default", "added", {"alert-history.io/target": "true"},
                {"target-name": b64("late"), "url": b64("http://a.example/hook")})  # fmt: skip
        await wait_for(lambda: registry.get("late") is not None)
        k8s.put("default", "added", {"alert-history.io/target": "true"},
                {"target-name": b64("late"), "url": b64("http://b.example/hook")})  # fmt: skip
        await wait_for(lambda: registry.get("late").url == "http://b.example/hook")
        k8s.put("default", "added", {"alert-history.io/target": "false"}, {})  # unselected
        await wait_for(lambda: registry.get("late") is None)
        late2 = {"name": b64("late2"), "type": b64("webhook"), "url": b64("http://c.example/")}
        k8s.put("default", "added2", {"publishing-target": "true"}, late2)
        await wait_for(lambda: registry.get("late2") is not None)
        k8s.delete("default", "added2")
        await wait_for(lambda: registry.get("late2") is None)

        # 410 Gone on the watches: the client lists again and keeps watching
        lists_before = len(k8s.lists)
        k8s.expire_watches()
        await wait_for(lambda: len(k8s.lists) >= lists_before + 6)
        await wait_for(lambda: len(k8s.watches) == 6)
        k8s.put("monitoring", "after-410", {"alert-history.io/target": "true"},
                {"target-name": b64("after"), "url": b64("http://d.example/")})  # fmt: skip
        await wait_for(lambda: registry.get("after") is not None)
        assert {t.name for t in registry.discovered.values()} >= {"pd-k", "slack-s", "wh-c"}
    finally:
        await gw.close()


async def test_configured_selectors_and_layouts(tmp_path, k8s, hook):
    k8s.put("default", "kebab", {"team": "a"},
            {"target-name": b64("kebab"), "url": b64("http://a.example/")})  # fmt: skip
    doc = '{"name": "%s", "type": "webhook", "url": "http://a.example/"}'
    k8s.put("default", "json", {"team": "a"}, {"config": b64(doc % "json")})
    k8s.put("default", "other-team", {"team": "b"}, {"config": b64(doc % "b")})
    kube = {"selectors": ["team=a"], "layouts": ["config"],
            "kubeconfig": k8s.kubeconfig(tmp_path / "kc")}  # fmt: skip
    gw = await start(config(tmp_path, {"kubernetes": kube}))
    try:
        registry = feature(gw).registry
        await wait_for(lambda: registry.get("json") is not None)
        assert set(registry.discovered) == {"json"}
        [bad] = registry.invalid
        assert bad.origin == "default/kebab" and "layouts config" in bad.reason
        assert k8s.lists and all(sel == "team=a" for _, sel in k8s.lists)
    finally:
        await gw.close()


async def test_forbidden_namespace_never_stops_the_others_and_refresh_reports_it(
    tmp_path, k8s, hook
):
    k8s.forbidden.add("locked")
    ok = {"name": b64("ok"), "type": b64("webhook"), "url": b64(hook.url + "/hook")}
    k8s.put("default", "ok", {"publishing-target": "true"}, ok)
    kube = {"namespaces": ["locked", "default"], "selectors": ["publishing-target=true"],
            "kubeconfig": k8s.kubeconfig(tmp_path / "kc")}  # fmt: skip
    data = config(tmp_path, {"kubernetes": kube}, admin={"listen": "off", "token": "admintok"})
    gw = await start(data)
    try:
        await wait_for(lambda: feature(gw).registry.get("ok") is not None)
        async with aiohttp.ClientSession() as http:
            url = gw.url + "/publishing/targets/refresh"
            async with http.post(url) as resp:
                assert resp.status == 401
            headers = {"Authorization": "Bearer admintok"}
            async with http.post(url, headers=headers) as resp:
                body = await resp.json()
            async with http.get(gw.url + "/publishing/mode") as resp:
                mode = await resp.json()
        assert resp.status == 200
        assert body["success"] is False and body["targets_discovered"] == 1
        assert body["invalid_targets"] == 0
        assert "locked" in body["message"] and "403" in body["message"]
        assert mode["mode"] == "normal" and mode["kubernetes_available"] is True
    finally:
        await gw.close()


async def test_in_cluster_service_account_config(tmp_path, monkeypatch):
    from kubernetes_asyncio.config import incluster_config

    from cutover.publishing.config import KubernetesConfig
    from cutover.publishing.discovery import api_client

    token = tmp_path / "token"
    token.write_text("sa-token-123")
    ca = tmp_path / "ca.crt"
    trustme.CA().cert_pem.write_to_path(str(ca))
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = await api_client(KubernetesConfig())
    try:
        cfg = client.configuration
        assert cfg.host == "https://10.0.0.1:443"
        assert cfg.ssl_ca_cert == str(ca)
        assert "sa-token-123" in str(cfg.api_key.get("BearerToken") or cfg.api_key)
    finally:
        await client.close()


# -- watches that fail: each is followed by a fresh list and watch -----------------------------

SELECTOR = "publishing-target=true"
WATCH = f"k8s-watch:default:{SELECTOR}"


def _one_watch(k8s: FakeKubernetes, tmp_path, **kube: Any) -> dict[str, Any]:
    """One namespace, one selector: one watch task."""
    kube = {"namespaces": ["default"], "selectors": [SELECTOR],
            "kubeconfig": k8s.kubeconfig(tmp_path / "kc"), **kube}  # fmt: skip
    return config(tmp_path, {"kubernetes": kube})


def _target(k8s: FakeKubernetes, name: str, url: str = "http://a.example/hook") -> None:
    k8s.put("default", name, {"publishing-target": "true"},
            {"name": b64(name), "type": b64("webhook"), "url": b64(url)})  # fmt: skip


async def test_a_watch_answering_a_list_is_logged_restarted_and_lists_again(tmp_path, k8s, caplog):
    _target(k8s, "first")
    k8s.answers = ["list"]  # the first watch gets a SecretList instead of events
    gw = await start(_one_watch(k8s, tmp_path))
    try:
        registry = feature(gw).registry
        error = "WatchAnswerError: the watch answered SecretList, not a stream of events"
        await assert_restarted(gw, WATCH, caplog, error)
        assert "answered SecretList" in feature(gw).readiness()["kubernetes"]["last_error"]
        await wait_for(lambda: len(k8s.watches) == 1)  # listed again, watching again
        _target(k8s, "later")
        await wait_for(lambda: registry.get("later") is not None)
        assert registry.get("first") is not None
    finally:
        await gw.close()


async def test_an_error_event_without_fields_backs_off_and_watches_again(
    tmp_path, k8s, caplog, monkeypatch
):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(discovery, "MIN_RELIST", 0.1)  # the backoff: 0.2 s, not 2 s
    k8s.answers = ["error-empty"]
    gw = await start(_one_watch(k8s, tmp_path))
    try:
        registry = feature(gw).registry
        await wait_for(lambda: len(k8s.watches) == 1, deadline=20)  # after the backoff
        _target(k8s, "later")
        await wait_for(lambda: registry.get("later") is not None)
        assert "KeyError" not in caplog.text
        assert "watch error event (error event)" in caplog.text  # the listing warning
        assert task_failures(gw, WATCH) == 0  # an error the API defines: handled in the loop
    finally:
        await gw.close()


async def test_a_bare_410_lists_again_from_scratch(tmp_path, k8s, caplog):
    caplog.set_level(logging.INFO)
    _target(k8s, "stays")
    _target(k8s, "goes")
    gw = await start(_one_watch(k8s, tmp_path))
    try:
        registry = feature(gw).registry
        await wait_for(lambda: registry.get("goes") is not None and len(k8s.watches) == 1)
        lists = len(k8s.lists)
        k8s.delete_quietly("default", "goes")  # the watch never hears of it
        k8s.expire_watches(bare=True)  # 410 with neither reason nor message
        await wait_for(lambda: registry.get("goes") is None)  # the new list has it gone
        assert len(k8s.lists) > lists and registry.get("stays") is not None
        await wait_for(lambda: len(k8s.watches) == 1)
        _target(k8s, "later")
        await wait_for(lambda: registry.get("later") is not None)
        assert "KeyError" not in caplog.text and task_failures(gw, WATCH) == 0
    finally:
        await gw.close()


async def test_the_resync_revives_a_watch_waiting_to_restart(tmp_path, k8s, caplog):
    gw = await start(_one_watch(k8s, tmp_path, resync="1s"))
    try:
        await wait_for(lambda: len(k8s.watches) == 1)
        gw.tasks.base_delay = gw.tasks.max_delay = 3600.0  # on its own it would wait an hour
        k8s.answers = ["list"]
        k8s.expire_watches()  # the next watch is answered with a list: it fails
        watch = gw.tasks.get(WATCH)
        assert watch is not None
        await wait_for(lambda: watch.failures == 1)
        await wait_for(lambda: watch.restarts == 1 and len(k8s.watches) == 1, deadline=20)
        assert watch.state == "running"
        _target(k8s, "later")
        await wait_for(lambda: feature(gw).registry.get("later") is not None)
    finally:
        await gw.close()


async def test_the_resync_restarts_after_an_unexpected_failure(tmp_path, k8s, caplog, monkeypatch):
    k8s.hold = True  # watches stay silent: only lists (the resync) see new secrets
    gw = await start(_one_watch(k8s, tmp_path, resync="1s"))
    try:
        fast_restarts(gw)
        discovery = feature(gw).discovery
        assert discovery is not None
        Fault(monkeypatch, discovery, "refresh")
        await assert_restarted(gw, "k8s-resync", caplog)
        _target(k8s, "listed")
        await wait_for(lambda: feature(gw).registry.get("listed") is not None)
    finally:
        await gw.close()


async def test_a_silent_watch_past_its_timeout_is_dropped_and_watched_again(
    tmp_path, k8s, caplog, monkeypatch
):
    """A connection that died without a FIN keeps a watch waiting for ever: silence longer than
    the watch's own timeout plus a grace is a read timeout, and the loop lists and watches again."""
    monkeypatch.setattr(discovery, "WATCH_READ_GRACE", 0.5)
    monkeypatch.setattr(discovery, "MIN_RELIST", 0.1)  # the backoffs: 0.2 s, 0.4 s
    k8s.hold = True  # open and silent, even past timeoutSeconds
    gw = await start(_one_watch(k8s, tmp_path, resync="1s"))
    try:
        await wait_for(lambda: k8s.watch_requests >= 3, deadline=40)
        assert "listing secrets failed" in caplog.text and "TimeoutError" in caplog.text
        assert task_failures(gw, WATCH) == 0  # a network failure: handled in the loop
    finally:
        await gw.close()
