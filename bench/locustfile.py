"""Locust scenario for the Alert History API (both implementations, or cutover in front of them).

    locust -f bench/locustfile.py --host http://127.0.0.1:8080            # web UI
    locust -f bench/locustfile.py --headless -u 20 -r 20 -t 60s --host URL
    cutover bench compare --a URL --b URL                                 # A/B, exact figures

This file is only ever loaded by Locust, in Locust's own process: the gateway and its tests never
import it (Locust monkey-patches sockets and threads with gevent). It depends on nothing from the
project, so it can be copied next to any Locust install.

Every request is named after what it does, not its URL, so the two sides' figures line up:

==================  ===============================================================================
``webhook``         an Alertmanager v4 webhook: a group of 1..``CUTOVER_BENCH_BATCH`` alerts of one
                    alertname, firing or resolved, varied labels (``envelope``), or one flat alert
                    as the Go service takes it (``flat``)
``history_legacy``  ``GET /history?alertname&status&limit`` (the Python service's parameters)
``history_new``     ``GET /history?page&page_size[&status]`` (the Go service's parameters)
``alerts_v2``       ``GET /api/v2/alerts?filter&status&page&limit``
``health``          ``GET /healthz``
==================  ===============================================================================

Settings (environment variables, read once at start):

- ``CUTOVER_BENCH_WEIGHTS``: ``webhook=4,history_legacy=3,history_new=2,alerts_v2=1,health=1``
  (the default); 0 leaves a request out, names not given keep their default.
- ``CUTOVER_BENCH_WEBHOOK``: ``envelope`` (default, to ``/webhook/``) or ``flat`` (to ``/webhook``);
  ``CUTOVER_BENCH_WEBHOOK_PATH`` and ``CUTOVER_BENCH_HEALTH_PATH`` (``/healthz``) override paths.
- ``CUTOVER_BENCH_BATCH`` (5): most alerts in one webhook. ``CUTOVER_BENCH_SEED`` (1): the alert
  population and every user's choices derive from it, so two runs send the same mix.
- ``CUTOVER_BENCH_RATE``: requests per second in total, spread over the users: the **open model**
  (requests leave on a fixed schedule whether or not earlier ones have answered, and each latency
  counts from the scheduled time, so a stalled server cannot hide behind coordinated omission).
  Unset or 0: the closed model (each user sends, waits for the answer, waits
  ``CUTOVER_BENCH_THINK`` seconds (0), sends again).
- ``CUTOVER_BENCH_INFLIGHT`` (100): most requests one open-model user keeps outstanding.
- ``CUTOVER_BENCH_TIMEOUT`` (10): connect and network timeout in seconds.
- ``CUTOVER_BENCH_SAMPLES``: a file that receives every request as one tab-separated line,
  ``start  name  latency_ms  ok  lag_ms  error``, with the exact latency Locust measured (its own
  percentiles are rounded). ``{pid}`` in the path is replaced by the process id (use it with
  ``--processes``). Lines are flushed every half second. A ``#ready  <time>`` line marks the
  moment every user is running; when Locust quits (end of ``-t``, SIGTERM), each request still
  waiting for its answer is written as failed ("no answer before the run stopped"), timed from
  when it was sent (or due), so a stalled server cannot vanish from the figures.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import gevent
import gevent.pool
from locust import FastHttpUser, constant, events, task

# --------------------------------------------------------------------------------------------------
# settings

TASK_NAMES = ("webhook", "history_legacy", "history_new", "alerts_v2", "health")
DEFAULT_WEIGHTS = {"webhook": 4, "history_legacy": 3, "history_new": 2, "alerts_v2": 1, "health": 1}


def _env_number(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None
    if not value >= minimum or value == float("inf"):
        raise ValueError(f"{name}={raw!r}: expected a finite number >= {minimum:g}")
    return value


def parse_weights(raw: str) -> dict[str, int]:
    """``"webhook=4,health=0"`` over the defaults; a clear ValueError on anything else."""
    weights = dict(DEFAULT_WEIGHTS)
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, eq, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise ValueError(
                f"CUTOVER_BENCH_WEIGHTS: unknown request {name!r}; expected {', '.join(TASK_NAMES)}"
            )
        try:
            weight = int(value)
        except ValueError:
            weight = -1
        if not eq or weight < 0:
            raise ValueError(f"CUTOVER_BENCH_WEIGHTS: {part!r}: expected {name}=<integer >= 0>")
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError("CUTOVER_BENCH_WEIGHTS: every weight is 0, nothing to send")
    return weights


WEIGHTS = parse_weights(os.environ.get("CUTOVER_BENCH_WEIGHTS", ""))
WEBHOOK_FORMAT = os.environ.get("CUTOVER_BENCH_WEBHOOK", "envelope").strip() or "envelope"
if WEBHOOK_FORMAT not in ("envelope", "flat"):
    raise ValueError(f"CUTOVER_BENCH_WEBHOOK={WEBHOOK_FORMAT!r}: expected envelope or flat")
WEBHOOK_PATH = os.environ.get("CUTOVER_BENCH_WEBHOOK_PATH") or (
    "/webhook/" if WEBHOOK_FORMAT == "envelope" else "/webhook"
)
HEALTH_PATH = os.environ.get("CUTOVER_BENCH_HEALTH_PATH") or "/healthz"
BATCH = int(_env_number("CUTOVER_BENCH_BATCH", 5, minimum=1))
SEED = os.environ.get("CUTOVER_BENCH_SEED", "1")
OPEN_RATE = _env_number("CUTOVER_BENCH_RATE", 0.0)
THINK = _env_number("CUTOVER_BENCH_THINK", 0.0)
IN_FLIGHT = int(_env_number("CUTOVER_BENCH_INFLIGHT", 100, minimum=1))
TIMEOUT = _env_number("CUTOVER_BENCH_TIMEOUT", 10.0, minimum=0.001)
SAMPLES = os.environ.get("CUTOVER_BENCH_SAMPLES", "")

# --------------------------------------------------------------------------------------------------
# payloads: a fixed population of alerts, derived from SEED

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
ALERTNAMES = {
    "HighCPUUsage": ("node", "CPU above 90% for 5 minutes"),
    "HighMemoryUsage": ("node", "memory above 85% for 10 minutes"),
    "DiskSpaceLow": ("node", "less than 10% disk space left"),
    "NodeNotReady": ("node", "node has been NotReady for 5 minutes"),
    "KubePodCrashLooping": ("pod", "pod is restarting repeatedly"),
    "KubePodNotReady": ("pod", "pod has been unready for 15 minutes"),
    "TargetDown": ("service", "scrape target is down"),
    "HighErrorRate": ("service", "5xx above 5% of requests"),
    "HighLatencyP99": ("service", "p99 latency above 1s"),
    "CertificateExpiringSoon": ("service", "TLS certificate expires in under 7 days"),
}
SEVERITIES = ("critical", "warning", "warning", "info")
NAMESPACES = ("production", "staging", "monitoring", "payments", "default")
SERVICES = ("checkout", "payments-api", "alert-history", "search", "auth", "ingest")
TEAMS = ("sre", "platform", "payments", "search")


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint: FNV-1a 64 over the sorted label pairs (prometheus/common)."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for chunk in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in chunk:
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _population(rng: random.Random, size: int = 240) -> list[dict[str, Any]]:
    """Alerts with varied label sets, each with one start time (re-sends keep stores bounded)."""
    base = 1_795_000_000  # a fixed instant, so the payloads do not depend on the clock
    out = []
    for i in range(size):
        alertname = rng.choice(tuple(ALERTNAMES))
        scope, summary = ALERTNAMES[alertname]
        labels = {
            "alertname": alertname,
            "severity": rng.choice(SEVERITIES),
            "cluster": rng.choice(("prod-eu-1", "prod-us-1", "staging-1")),
            "namespace": rng.choice(NAMESPACES),
            "job": {"node": "node-exporter", "pod": "kube-state-metrics"}.get(scope, "blackbox"),
        }
        if scope == "node":
            labels["instance"] = f"10.0.{rng.randrange(8)}.{rng.randrange(2, 250)}:9100"
        elif scope == "pod":
            service = rng.choice(SERVICES)
            labels |= {"pod": f"{service}-{rng.getrandbits(40):010x}"[:24], "container": service}
        else:
            labels |= {"service": rng.choice(SERVICES), "team": rng.choice(TEAMS)}
        starts = base + i * 37 + rng.randrange(3600)
        target = labels.get("instance") or labels.get("pod") or labels["service"]
        out.append(
            {
                "labels": labels,
                "annotations": {
                    "summary": summary,
                    "description": f"{alertname} on {target} in {labels['namespace']}",
                    "runbook_url": f"http://127.0.0.1/runbooks/{alertname.lower()}",
                },
                "startsAt": _stamp(starts),
                "resolvedAt": _stamp(starts + 60 * rng.randrange(1, 90)),
                "generatorURL": f"http://127.0.0.1:9090/graph?g0.expr={alertname}&g0.tab=1",
                "fingerprint": fingerprint(labels),
            }
        )
    return out


def _alert(base: dict[str, Any], resolved: bool) -> dict[str, Any]:
    return {
        "status": "resolved" if resolved else "firing",
        "labels": base["labels"],
        "annotations": base["annotations"],
        "startsAt": base["startsAt"],
        "endsAt": base["resolvedAt"] if resolved else ZERO_TIME,
        "generatorURL": base["generatorURL"],
        "fingerprint": base["fingerprint"],
    }


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    first, *rest = maps
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def envelope(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """An Alertmanager v4 webhook for alerts of one alertname (its group)."""
    alertname = alerts[0]["labels"]["alertname"]
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": "alert-history",
        "status": "firing" if firing else "resolved",
        "alerts": alerts,
        "groupLabels": {"alertname": alertname},
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
    }


def flat(alert: dict[str, Any]) -> dict[str, Any]:
    """One alert as the Go service's ``POST /webhook`` takes it (``alertname`` at the top)."""
    out = {"alertname": alert["labels"]["alertname"], **alert}
    if out["endsAt"] == ZERO_TIME:
        del out["endsAt"]
    return out


def build_bodies(seed: str, count: int = 256) -> list[bytes]:
    """The webhook bodies the users pick from: 70% firing, batches of 1..BATCH of one group."""
    rng = random.Random(f"{seed}:bodies")
    population = _population(rng)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for item in population:
        by_name.setdefault(item["labels"]["alertname"], []).append(item)
    bodies = []
    for _ in range(count):
        group = by_name[rng.choice(sorted(by_name))]
        resolved = rng.random() < 0.3
        if WEBHOOK_FORMAT == "flat":
            bodies.append(json.dumps(flat(_alert(rng.choice(group), resolved))).encode())
            continue
        size = rng.randint(1, min(BATCH, len(group)))
        alerts = [_alert(a, resolved or rng.random() < 0.1) for a in rng.sample(group, size)]
        bodies.append(json.dumps(envelope(alerts)).encode())
    return bodies


BODIES = build_bodies(SEED)
NAMES = sorted(ALERTNAMES)
WEBHOOK_HEADERS = {"Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}

# --------------------------------------------------------------------------------------------------
# requests (shared by both load models; ``due`` is the scheduled wall time in the open model)


_in_flight: dict[int, tuple[str, float]] = {}  # request number -> (name, due or start time)
_request_numbers = itertools.count()


def _send(user: Any, method: str, path: str, name: str, due: float | None, **kw: Any) -> None:
    """One request, remembered while it is out (so a stop can count it as unanswered)."""
    number = next(_request_numbers)
    _in_flight[number] = (name, due if due is not None else time.time())
    try:
        context = {} if due is None else {"cutover_due": due}
        user.client.request(method, path, name=name, context=context, **kw)
    finally:
        _in_flight.pop(number, None)


def webhook(user: Any, due: float | None = None) -> None:
    body = user.rng.choice(BODIES)
    _send(user, "POST", WEBHOOK_PATH, "webhook", due, data=body, headers=WEBHOOK_HEADERS)


def history_legacy(user: Any, due: float | None = None) -> None:
    rng = user.rng
    query: dict[str, Any] = {}
    if rng.random() < 0.6:
        query["alertname"] = rng.choice(NAMES)
    if rng.random() < 0.5:
        query["status"] = rng.choice(("firing", "resolved"))
    query["limit"] = rng.choice((10, 50, 100))
    _send(user, "GET", "/history?" + urlencode(query), "history_legacy", due)


def history_new(user: Any, due: float | None = None) -> None:
    rng = user.rng
    query: dict[str, Any] = {"page": rng.randint(1, 3), "page_size": rng.choice((20, 50, 100))}
    if rng.random() < 0.3:
        query["status"] = rng.choice(("firing", "resolved"))
    _send(user, "GET", "/history?" + urlencode(query), "history_new", due)


def alerts_v2(user: Any, due: float | None = None) -> None:
    rng = user.rng
    query: dict[str, Any] = {"page": 1, "limit": rng.choice((50, 100))}
    if rng.random() < 0.7:
        query["filter"] = f'alertname="{rng.choice(NAMES)}"'
    if rng.random() < 0.5:
        query["status"] = "firing"
    _send(user, "GET", "/api/v2/alerts?" + urlencode(query), "alerts_v2", due)


def health(user: Any, due: float | None = None) -> None:
    _send(user, "GET", HEALTH_PATH, "health", due)


REQUESTS: dict[str, Callable[..., None]] = {
    "webhook": webhook,
    "history_legacy": history_legacy,
    "history_new": history_new,
    "alerts_v2": alerts_v2,
    "health": health,
}
ACTIVE = [(REQUESTS[name], weight) for name, weight in WEIGHTS.items() if weight > 0]


_user_numbers = itertools.count()


def _user_rng() -> random.Random:
    """Each user's own sequence of choices: the same on side A and side B."""
    return random.Random(f"{SEED}:user:{next(_user_numbers)}")


# --------------------------------------------------------------------------------------------------
# users


class AlertHistoryUser(FastHttpUser):
    """Closed model: send, wait for the answer, think, send again."""

    abstract = OPEN_RATE > 0
    wait_time = constant(THINK)
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT
    tasks = dict(ACTIVE)

    def on_start(self) -> None:
        self.rng = _user_rng()


class AlertHistoryOpenUser(FastHttpUser):
    """Open model: requests leave on a fixed schedule, whatever earlier ones are doing."""

    abstract = OPEN_RATE <= 0
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT
    concurrency = IN_FLIGHT

    def on_start(self) -> None:
        self.rng = _user_rng()
        self.pool = gevent.pool.Pool(IN_FLIGHT)
        self.funcs = [f for f, _ in ACTIVE]
        self.weights = [w for _, w in ACTIVE]

    @task
    def schedule(self) -> None:
        runner = self.environment.runner
        users = max(int(getattr(runner, "target_user_count", 0) or 0), 1)
        interval = users / OPEN_RATE
        due = time.time() + self.rng.random() * interval  # users out of phase with each other
        while True:
            delay = due - time.time()
            if delay > 0:
                gevent.sleep(delay)
            # blocks while IN_FLIGHT requests are out; the wait then shows up as lag
            self.pool.spawn(self._send, due)
            due += interval

    def _send(self, due: float) -> None:
        self.rng.choices(self.funcs, self.weights)[0](self, due)


# --------------------------------------------------------------------------------------------------
# exact latencies


class _SampleFile:
    """Buffers one line per request and appends them to the samples file twice a second."""

    def __init__(self, path: str) -> None:
        self.path = path.replace("{pid}", str(os.getpid()))
        self.lines: list[str] = []
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed at quit
        self.flusher: gevent.Greenlet | None = None

    def record(
        self,
        name: str,
        response_time: float,
        start_time: float | None,
        context: dict[str, Any] | None,
        exception: BaseException | None,
        response: Any,
    ) -> None:
        start = start_time if start_time is not None else time.time() - response_time / 1000
        latency, lag = response_time, 0.0
        due = (context or {}).get("cutover_due")
        if due is not None:
            lag = max((start - due) * 1000, 0.0)
            latency, start = response_time + lag, due
        ok = exception is None
        error = "" if ok else _describe(exception, response)
        clean = name.replace("\t", " ")
        self.lines.append(f"{start:.6f}\t{clean}\t{latency:.4f}\t{int(ok)}\t{lag:.4f}\t{error}\n")

    def marker(self, kind: str, when: float) -> None:
        """A ``#kind<TAB>time`` line (``#ready`` once every user is running)."""
        self.lines.append(f"#{kind}\t{when:.6f}\n")
        self.flush()

    def unanswered(self, now: float) -> None:
        """Requests still out when the run stops: failures, timed from when they were due."""
        for name, since in list(_in_flight.values()):
            waited = max((now - since) * 1000, 0.0)
            self.lines.append(
                f"{since:.6f}\t{name}\t{waited:.4f}\t0\t0.0000\tno answer before the run stopped\n"
            )

    def flush(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []
            self.file.write("".join(lines))
        self.file.flush()

    def run(self) -> None:
        while True:
            gevent.sleep(0.5)
            self.flush()

    def close(self) -> None:
        if self.flusher is not None:
            self.flusher.kill(block=False)
        self.flush()
        self.file.close()


def _describe(exception: BaseException | None, response: Any) -> str:
    status = getattr(response, "status_code", 0) or 0
    if status:
        return f"HTTP {status}"
    detail = str(exception)
    if "original=" in detail:  # geventhttpclient: "URL ...: 0, original=timed out"
        detail = detail.split("original=", 1)[1]
    text = " ".join(f"{type(exception).__name__}: {detail}".split())
    return re.sub(r"(://[^/@\s:]*):[^/@\s]*@", r"\1:***@", text)[:160]  # no URL passwords


_samples: _SampleFile | None = None


@events.init.add_listener
def _open_samples(environment: Any, **_kw: Any) -> None:
    global _samples
    if SAMPLES and _samples is None:
        _samples = _SampleFile(SAMPLES)
        _samples.flusher = gevent.spawn(_samples.run)


@events.spawning_complete.add_listener
def _mark_ready(**_kw: Any) -> None:
    if _samples is not None:
        _samples.marker("ready", time.time())


@events.request.add_listener
def _on_request(
    name: str,
    response_time: float,
    exception: BaseException | None = None,
    context: dict[str, Any] | None = None,
    start_time: float | None = None,
    response: Any = None,
    **_kw: Any,
) -> None:
    if _samples is not None:
        _samples.record(name, response_time, start_time, context, exception, response)


@events.test_stop.add_listener
def _flush_samples(**_kw: Any) -> None:
    if _samples is not None:
        _samples.flush()


@events.quitting.add_listener
def _close_samples(**_kw: Any) -> None:
    global _samples
    if _samples is not None:
        _samples.unanswered(time.time())
        _samples.close()
        _samples = None
