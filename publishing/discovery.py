"""Targets from Kubernetes secrets: list, then watch, per (namespace, selector); resync beside.

Every configured selector is listed and watched in every configured namespace (a secret
matching several selectors counts once). Watch events (ADDED, MODIFIED, DELETED) update the
set at once; a watch that ends or expires (410 Gone) is followed by a fresh list. A full
list of everything also runs every `resync` and on `POST /publishing/targets/refresh`.

Watches and the resync are tasks of the gateway (`core.tasks`): a watch that fails in a way
nobody foresaw (a list where events were expected, an event that is not one) is logged,
counted, and started again after a backoff, listing before it watches again; each resync also
restarts at once any watch still waiting to.

A secret that cannot become a target is skipped with one log line naming the secret and the
field, and shown as invalid in the API; it never stops the others. Credentials come from
the in-cluster service account when running in a pod (or `in_cluster: true`), else from a
kubeconfig file. The gateway needs get, list and watch on secrets (docs/publishing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from cutover.core.clock import Clock
from cutover.core.tasks import Supervised, TaskSupervisor
from cutover.publishing.config import KubernetesConfig
from cutover.publishing.secrets import parse_secret
from cutover.publishing.targets import InvalidTarget, TargetRegistry, TargetSpec

log = logging.getLogger("cutover.publishing.discovery")

_Key = tuple[str, str]  # (namespace, selector)
_NETWORK = (aiohttp.ClientError, OSError, TimeoutError)
MIN_RELIST = 1.0  # seconds between two lists of one (namespace, selector) after a watch ended
MAX_BACKOFF = 60.0
LIST_TIMEOUT = 30.0  # seconds for a whole list of secrets
# A watch ends by itself after `resync`; silence longer than that plus this is a connection
# that died without a FIN (a node gone, a NAT entry dropped): read timeout, list, watch again.
WATCH_READ_GRACE = 30.0
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class _Secret:
    namespace: str
    name: str
    labels: Mapping[str, str]
    data: Mapping[str, str]
    string_data: Mapping[str, str]


@dataclass(slots=True)
class DiscoveryStatus:
    available: bool = False  # the API answered at least once
    last_refresh: float | None = None  # wall time of the last full list that worked
    last_error: str | None = None
    errors: dict[str, str] = field(default_factory=dict)  # "ns selector" -> reason


def _mapping(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _secret(raw: Mapping[str, Any], namespace: str) -> _Secret:
    meta = _mapping(raw.get("metadata"))
    return _Secret(
        namespace=str(meta.get("namespace") or namespace),
        name=str(meta.get("name") or ""),
        labels=_mapping(meta.get("labels")),
        data=_mapping(raw.get("data")),
        string_data=_mapping(raw.get("stringData")),
    )


class WatchAnswerError(Exception):
    """The watch answered something that is not a stream of watch events."""


class _Watch(k8s_watch.Watch):
    """kubernetes-asyncio's watch, reading ERROR events and non-events as the API defines
    them rather than failing on a missing field.

    An `ERROR` event's object is a `Status`: its `code` (410: the version expired) becomes an
    `ApiException` whether or not `reason`/`message` are there. A line that is not an event
    (a `SecretList` from something that ignored `watch=true`) is a `WatchAnswerError`."""

    def unmarshal_event(self, data: str | bytes, response_type: str | None) -> Any:
        try:
            js = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise WatchAnswerError("the watch answered a line that is not JSON") from None
        if not isinstance(js, dict):
            raise WatchAnswerError("the watch answered JSON that is not an event")
        kind = js.get("type")
        obj = js.get("object")
        if isinstance(kind, str) and kind.upper() == "ERROR":
            status = _mapping(obj)
            raise _status_error(status)
        if not isinstance(kind, str) or not isinstance(obj, Mapping):
            if "code" in js:  # a bare Status (an error answered in place of the stream)
                raise _status_error(js)
            what = js.get("kind") or "an object"
            raise WatchAnswerError(f"the watch answered {what}, not a stream of events")
        return super().unmarshal_event(data, response_type)


def _status_error(status: Mapping[str, Any]) -> ApiException:
    code = status.get("code")
    reason = " ".join(str(status[k]) for k in ("reason", "message") if status.get(k))
    return ApiException(status=code if isinstance(code, int) else 0, reason=reason or "error event")


async def api_client(cfg: KubernetesConfig) -> k8s.ApiClient:
    """An API client from the service account (in a pod) or a kubeconfig file."""
    configuration = k8s.Configuration()
    in_cluster = cfg.in_cluster
    if in_cluster is None:
        in_cluster = cfg.kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        await k8s_config.load_kube_config(
            config_file=cfg.kubeconfig, context=cfg.context, client_configuration=configuration
        )
    return k8s.ApiClient(configuration=configuration)


class Discovery:
    def __init__(
        self,
        cfg: KubernetesConfig,
        registry: TargetRegistry,
        clock: Clock,
        tasks: TaskSupervisor | None = None,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.clock = clock
        self.supervisor = tasks or TaskSupervisor(clock=clock)
        self.status = DiscoveryStatus()
        self._seen: dict[_Key, dict[str, _Secret]] = {}
        self._logged: set[tuple[str, str]] = set()
        self._client: k8s.ApiClient | None = None
        self._api: k8s.CoreV1Api | None = None
        self._watches: dict[_Key, Supervised] = {}
        self._resync: Supervised | None = None
        self._ready = asyncio.Event()

    @property
    def pairs(self) -> list[_Key]:
        return [(ns, sel) for ns in self.cfg.namespaces for sel in self.cfg.selectors]

    async def start(self) -> None:
        try:
            self._client = await api_client(self.cfg)
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            self.status.last_error = f"no Kubernetes configuration ({type(exc).__name__}: {exc})"
            log.warning("publishing: kubernetes discovery is off: %s", self.status.last_error)
            self._ready.set()
            return
        self._api = k8s.CoreV1Api(self._client)
        for key in self.pairs:
            self._start_watch(key)
        self._resync = self.supervisor.start("k8s-resync", self._resync_loop)

    def _start_watch(self, key: _Key) -> None:
        self._watches[key] = self.supervisor.start(
            f"k8s-watch:{key[0]}:{key[1]}", lambda: self._watch_loop(key)
        )

    def _revive_watches(self) -> None:
        """Every watch waits on the API again: one waiting to restart after a failure
        restarts now, one that has ended (it should not) is started again."""
        for key in self.pairs:
            watch = self._watches.get(key)
            if watch is None or watch.done():
                self._start_watch(key)
            else:
                watch.wake()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait for the first full list (True) or `timeout` (False)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        tasks = [*self._watches.values(), *([self._resync] if self._resync else [])]
        self._watches, self._resync = {}, None
        for task in tasks:
            await task.stop()
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- listing ---------------------------------------------------------------------------

    async def _list(self, key: _Key) -> str | None:
        """List one (namespace, selector); returns the list's resourceVersion."""
        assert self._api is not None
        ns, selector = key
        resp = await self._api.list_namespaced_secret(
            ns,
            label_selector=selector,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=LIST_TIMEOUT, connect=CONNECT_TIMEOUT),
        )
        async with resp:
            if resp.status >= 400:
                detail = (await resp.text())[:300]
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                    detail = str(orjson.loads(detail).get("message") or detail)
                raise ApiException(status=resp.status, reason=f"{resp.reason}: {detail}")
            body = await resp.json(content_type=None)
        if not isinstance(body, Mapping) or not isinstance(body.get("items") or [], list):
            raise WatchAnswerError("the list answered something that is not a SecretList")
        items = [i for i in body.get("items") or [] if isinstance(i, Mapping)]
        secrets = (_secret(item, ns) for item in items)
        self._seen[key] = {s.name: s for s in secrets}
        self.status.available = True
        self.status.errors.pop(f"{ns} {selector}", None)
        return (body.get("metadata") or {}).get("resourceVersion")

    async def refresh(self) -> tuple[bool, int]:
        """List everything now; (every list worked, targets found)."""
        if self._api is None:
            return False, 0
        ok = True
        for key in self.pairs:
            try:
                await self._list(key)
            except (ApiException, WatchAnswerError, ValueError, *_NETWORK) as exc:
                ok = False
                self._list_failed(key, exc)
        self._rebuild()
        if ok:
            self.status.last_refresh = self.clock.now()
            self.status.last_error = None
        self._ready.set()
        return ok, len(self.registry.discovered)

    def _list_failed(self, key: _Key, exc: BaseException) -> None:
        ns, selector = key
        if isinstance(exc, ApiException) and not exc.status:  # an ERROR event without a code
            reason = f"watch error event ({exc.reason})"
        elif isinstance(exc, ApiException):
            reason = f"HTTP {exc.status} {exc.reason or ''}".strip()
            if exc.status == 403:
                reason += " (the gateway needs get/list/watch on secrets in this namespace)"
        elif isinstance(exc, WatchAnswerError):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}"
        self.status.errors[f"{ns} {selector}"] = reason
        self.status.last_error = f"namespace {ns}, selector {selector}: {reason}"
        log.warning("publishing: listing secrets failed: %s", self.status.last_error)

    async def _resync_loop(self) -> None:
        await self.refresh()
        while True:
            await asyncio.sleep(self.cfg.resync)
            await self.refresh()
            self._revive_watches()

    async def _watch_loop(self, key: _Key) -> None:
        """List, then watch from the list's version; again after the watch ends. Failures the
        API defines (HTTP errors, the network) back off here; anything else is left to the
        task supervisor, which logs it, backs off and starts this loop (a fresh list) again."""
        assert self._api is not None
        ns, selector = key
        failures = 0  # API or network errors in a row
        expired = 0  # watches in a row that expired before any event
        while True:
            try:
                version = await self._list(key)
                self._rebuild()
                seconds = int(max(1, self.cfg.resync))
                silence = aiohttp.ClientTimeout(
                    total=None, connect=CONNECT_TIMEOUT, sock_read=seconds + WATCH_READ_GRACE
                )
                async with _Watch() as watch:
                    stream = watch.stream(
                        self._api.list_namespaced_secret,
                        ns,
                        label_selector=selector,
                        resource_version=version,
                        timeout_seconds=seconds,
                        allow_watch_bookmarks=False,
                        _request_timeout=silence,
                    )
                    async for event in stream:
                        self._on_event(key, event)
                        failures = expired = 0
                failures = expired = 0
                await asyncio.sleep(MIN_RELIST)  # ended quietly: list again
            except ApiException as exc:
                if exc.status == 410:  # the version we watch from expired: list from scratch
                    expired += 1
                    log.info("publishing: watch of %s %s expired; listing again", ns, selector)
                    if expired > 1:  # expired again at once: do not spin
                        await asyncio.sleep(min(MAX_BACKOFF, MIN_RELIST * 2 ** (expired - 2)))
                    continue
                failures += 1
                self._list_failed(key, exc)
                await asyncio.sleep(min(MAX_BACKOFF, MIN_RELIST * 2**failures))
            except _NETWORK as exc:
                failures += 1
                self._list_failed(key, exc)
                await asyncio.sleep(min(MAX_BACKOFF, MIN_RELIST * 2**failures))
            except Exception as exc:
                self._list_failed(key, exc)  # shown in /readyz; the supervisor restarts us
                raise

    def _on_event(self, key: _Key, event: Mapping[str, Any]) -> None:
        kind = str(event.get("type", "")).upper()
        raw = event.get("raw_object")
        if not isinstance(raw, Mapping) or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        secret = _secret(raw, key[0])
        seen = self._seen.setdefault(key, {})
        if kind == "DELETED":
            seen.pop(secret.name, None)
        else:
            seen[secret.name] = secret
        log.info("publishing: secret %s/%s %s", secret.namespace, secret.name, kind.lower())
        self._rebuild()

    # -- secrets -> targets -----------------------------------------------------------------

    def _rebuild(self) -> None:
        unique: dict[tuple[str, str], _Secret] = {}
        for key in self.pairs:
            for secret in self._seen.get(key, {}).values():
                unique[(secret.namespace, secret.name)] = secret
        targets: list[TargetSpec] = []
        invalid: list[InvalidTarget] = []
        logged: set[tuple[str, str]] = set()
        for (ns, name), secret in sorted(unique.items()):
            result = parse_secret(
                ns,
                name,
                secret.data,
                string_data=secret.string_data,
                labels=secret.labels,
                layouts=self.cfg.layouts,
            )
            if isinstance(result, InvalidTarget):
                invalid.append(result)
                mark = (result.origin, f"{result.field}:{result.reason}")
                logged.add(mark)
                if mark not in self._logged:
                    log.warning(
                        "publishing: secret %s skipped: field %r: expected %s",
                        result.origin,
                        result.field or "(secret)",
                        result.reason,
                    )
            else:
                targets.append(result)
        self._logged = logged
        self.registry.set_discovered(targets, invalid)
