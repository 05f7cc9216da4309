"""MIGRATION.md runs: every marked block, in order, against the sample backends on loopback.

The runbook's blocks carry markers (its "How to read this document" table). This test writes its
files, starts its long-running processes, runs its commands with bash (a failing command fails
the test), compares what they print with the document's `migration-output` blocks in substance
(numbers and timestamps normalised, URLs turned back into the document's variables), finds its
`migration-log` lines in the gateway's log, and causes each `migration-drill` failure itself:
Redis stopped and restarted empty, the store cut off behind a relay, the LLM answering errors,
PagerDuty answering 503, the gateway restarted. A block with a marker it does not know fails.

Kubernetes blocks are checked by rendering (tests/integration/runbook_helm.py): each helm
command, with the files and values the document gave it up to there, is rendered with
`helm/cutover`, its objects validated and its config put through `cutover check-config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml

from tests.conftest import free_port
from tests.integration import runbook_helm
from tests.integration.alerts_helpers import FakeLLM, TcpRelay
from tests.integration.publishing_fakes import FakePagerDuty

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "MIGRATION.md"
PG_URL = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ROUTING_KEY = "R0UTINGKEY0123456789"

RUNNABLE = {"migration-step", "migration-rehearsal"}
MARKERS = {
    ("sh", "migration-env"),
    ("yaml", "migration-file"),
    ("yaml", "migration-section"),
    ("sh", "migration-serve"),
    ("sh", "migration-step"),
    ("sh", "migration-rehearsal"),
    ("sh", "migration-drill"),
    ("sh", "migration-helm"),
    ("text", "migration-output"),
    ("text", "migration-log"),
}
DRILLS = {
    "gateway-restart",
    "redis-down",
    "redis-up",
    "store-down",
    "store-up",
    "llm-down",
    "llm-up",
    "target-down",
    "target-up",
}
STEP_TIMEOUT = 240.0  # a bound for a hung command; the runbook's own waits are shorter


# -- the document -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    marker: str
    arg: str
    text: str

    def where(self) -> str:
        return f"MIGRATION.md:{self.line} ({self.lang} {self.marker} {self.arg}".rstrip() + ")"


FENCE = re.compile(r"^```(.*)$")


def parse_blocks(text: str) -> list[Block]:
    """Every fenced block, with its language, marker and argument (`yaml migration-file X`)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, words = i, m.group(1).split()
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"MIGRATION.md:{start + 1}: a fence that never closes")
        i += 1
        lang = words[0] if words else ""
        marker = words[1] if len(words) > 1 else ""
        arg = " ".join(words[2:])
        blocks.append(Block(start + 1, lang, marker, arg, "\n".join(body) + "\n"))
    return blocks


def check_markers(blocks: list[Block]) -> None:
    """Nothing is skipped silently: an unknown or missing marker, an output block after
    something that prints nothing, an unknown drill — each fails."""
    previous: Block | None = None
    for b in blocks:
        assert (b.lang, b.marker) in MARKERS, f"{b.where()}: not a marker the runbook test knows"
        if b.marker in ("migration-file", "migration-section"):
            assert b.arg, f"{b.where()}: which file?"
        if b.marker == "migration-drill":
            assert b.arg in DRILLS, f"{b.where()}: unknown drill (known: {sorted(DRILLS)})"
        if b.marker == "migration-output":
            assert previous is not None and previous.marker in RUNNABLE, (
                f"{b.where()}: an output block must follow a step or rehearsal block"
            )
        previous = b


NUMBER = re.compile(r"\d+(?:\.\d+)?")
TIME = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:\d\d)?"
    r"|[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"
)


def normalise(text: str, names: dict[str, str]) -> list[str]:
    """Lines compared in substance: the runbook's variables for their values, `<time>` for a
    timestamp, `#` for any number, blanks collapsed."""
    for name, value in sorted(names.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"${name}")
    text = TIME.sub("<time>", text)
    text = NUMBER.sub("#", text)
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def missing_lines(expected: str, actual: str, names: dict[str, str]) -> list[str]:
    """Expected lines not found, in order, each within some line of `actual`."""
    got = normalise(actual, names)
    missing, at = [], 0
    for want in normalise(expected, names):
        found = next((i for i in range(at, len(got)) if want in got[i]), None)
        if found is None:
            missing.append(want)
        else:
            at = found + 1
    return missing


def replace_section(path: Path, block: str) -> None:
    """Replace the top-level key `block` starts with (its lines up to the next top-level key)."""
    key = block.split(":", 1)[0].strip()
    lines = path.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(f"{key}:")]
    assert len(starts) == 1, f"{path.name}: no single top-level {key!r} to replace"
    end = starts[0] + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " #"):
        end += 1
    path.write_text("".join(lines[: starts[0]]) + block + "".join(lines[end:]))
    yaml.safe_load(path.read_text())  # still YAML


def bash_syntax(block: Block) -> None:
    done = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    assert done.returncode == 0, f"{block.where()}: not valid shell: {done.stderr}"


# -- the world the runbook runs in ------------------------------------------------------------


class World:
    """Loopback stand-ins for production: a Redis of its own, PostgreSQL behind a relay that
    can be cut, an LLM and a PagerDuty that can be made to fail, the runbook's processes."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.bin = work / ".bin"
        self.schema = f"runbook_{uuid.uuid4().hex[:10]}"
        self.redis_port = free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        self.relay = TcpRelay()
        self.llm = FakeLLM()
        self.pagerduty = FakePagerDuty(ROUTING_KEY)
        self.serving: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.groups: set[int] = set()  # process groups of steps (background traffic)
        self.env: dict[str, str] = {}
        self.names: dict[str, str] = {}  # the runbook's variables -> loopback values
        self.releases = runbook_helm.Releases()  # what the Kubernetes blocks installed so far
        self.renders: list[asyncio.Future[runbook_helm.Rendered]] = []  # beside the run

    async def start(self) -> None:
        self.bin.mkdir()
        for name, line in (("cutover", "-m cutover"), ("python", "")):
            shim = self.bin / name
            shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {line} "$@"\n')
            shim.chmod(0o755)
        self.start_redis()
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'CREATE SCHEMA "{self.schema}"')
        finally:
            await conn.close()
        await self.relay.start()
        await self.llm.start()
        await self.pagerduty.start()
        ports: dict[str, int] = {}
        for name in ("gateway", "admin", "python", "go"):
            while (port := free_port()) in (*ports.values(), self.redis_port):
                pass  # the kernel may hand the same free port out twice in a row
            ports[name] = port
        self.names = {
            "CUTOVER_LISTEN": f"127.0.0.1:{ports['gateway']}",
            "CUTOVER_ADMIN_LISTEN": f"127.0.0.1:{ports['admin']}",
            "CUTOVER_URL": f"http://127.0.0.1:{ports['gateway']}",
            "CUTOVER_ADMIN_URL": f"http://127.0.0.1:{ports['admin']}",
            "CUTOVER_ADMIN_TOKEN": "oncall-token-" + uuid.uuid4().hex,
            "ALERTMANAGER_TOKEN": "alertmanager-token-" + uuid.uuid4().hex,
            "CUTOVER_STORAGE": (
                f"postgresql://postgres@127.0.0.1:{self.relay.port}/test?search_path={self.schema}"
            ),
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PYTHON_URL": f"http://127.0.0.1:{ports['python']}",
            "GO_URL": f"http://127.0.0.1:{ports['go']}",
            "LLM_BASE_URL": self.llm.url,
            "LLM_API_KEY": "sk-runbook-000000000000",
            "PAGERDUTY_URL": f"{self.pagerduty.url}/v2/enqueue",
            "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "BENCH_USERS": "10",
            "BENCH_DURATION": "2s",
            "BENCH_ROUNDS": "1",
        }
        rehearsal = {  # the "Rehearse first" table of the runbook
            "CANARY_WINDOW": "5s",
            "CANARY_MIN_REQUESTS": "20",
            "CANARY_STEP_INTERVAL": "2s",
            "CANARY_STEP_MIN_REQUESTS": "20",
            "PARITY_MIN_SAMPLES": "20",
            "PARITY_WINDOW": "50",
            "MIRROR_PERCENT": "100",
            "CAPTURE_PERCENT": "100",
            "LLM_TIMEOUT": "1s",
        }
        self.env = {
            **os.environ,
            **self.names,
            **rehearsal,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "PYTHONUNBUFFERED": "1",
        }

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(10)
        self.redis = None

    async def close(self) -> None:
        await asyncio.gather(*self.renders, return_exceptions=True)
        for group in self.groups:  # the traffic first, so that the gateway has nothing to drain
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)
        for _, proc, _ in self.serving:  # the fakes it talks to keep answering while it stops
            await asyncio.to_thread(_stop, proc)
        self.stop_redis()
        await self.relay.stop()
        await self.llm.stop()
        await self.pagerduty.stop()
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(PG_URL)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()

    # -- the runbook's processes and commands ---------------------------------------------

    def serve(self, command: str) -> None:
        log = self.work / f"serve-{len(self.serving)}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["bash", "-c", "exec " + command.strip()], cwd=self.work, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.serving.append((command, proc, log))

    def gateway(self) -> tuple[int, str, subprocess.Popen[bytes], Path]:
        found = [
            (i, c, p, log)
            for i, (c, p, log) in enumerate(self.serving)
            if c.strip().startswith("cutover serve")
        ]
        assert found, "no `cutover serve` block has run"
        return found[-1]

    def gateway_log(self) -> str:
        return "".join(
            log.read_text(errors="replace")
            for c, _, log in self.serving
            if c.strip().startswith("cutover serve")
        )

    async def admin_json(self, path: str) -> str:
        """An admin endpoint's answer, for a failure's message: what the gateway saw."""
        url = self.names["CUTOVER_ADMIN_URL"] + path
        auth = {"Authorization": f"Bearer {self.names['CUTOVER_ADMIN_TOKEN']}"}
        try:
            async with aiohttp.ClientSession() as session, session.get(url, headers=auth) as r:
                return f"{r.status} {(await r.text())[:6000]}"
        except (aiohttp.ClientError, OSError) as e:
            return f"unavailable: {e!r}"

    async def run(self, block: Block) -> str:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", block.text, cwd=self.work, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.groups.add(proc.pid)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), STEP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(
                f"{block.where()}: still running after {STEP_TIMEOUT:g}s"
            ) from None
        text = out.decode(errors="replace")
        assert proc.returncode == 0, (
            f"{block.where()}: exit {proc.returncode}\n--- output\n{text}\n--- gateway log (end)\n"
            + self.gateway_log()[-4000:]
        )
        return text

    async def drill(self, name: str) -> None:
        if name == "gateway-restart":
            index, command, proc, log = self.gateway()
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 60)
            with open(log, "ab") as out:
                restarted = subprocess.Popen(
                    ["bash", "-c", "exec " + command.strip()], cwd=self.work, env=self.env,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            self.serving[index] = (command, restarted, log)
        elif name == "redis-down":
            self.stop_redis()
        elif name == "redis-up":
            self.start_redis()  # empty, as a Redis without persistence comes back
        elif name == "store-down":
            await self.relay.stop()
        elif name == "store-up":
            await self.relay.start()
        elif name == "llm-down":
            self.llm.mode = "error"
        elif name == "llm-up":
            self.llm.mode = "good"
        elif name == "target-down":
            self.pagerduty.down = True
        elif name == "target-up":
            self.pagerduty.down = False

    async def helm(self, block: Block) -> None:
        """Parse a Kubernetes block now, with the files and values the document has given so
        far; render and check what it would install beside the rest of the run."""
        planned = await asyncio.to_thread(
            runbook_helm.plan, block.text, block.where(), self.env, self.work, self.releases
        )
        self.renders += [
            asyncio.ensure_future(asyncio.to_thread(runbook_helm.check, c)) for c in planned
        ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    try:
        await w.start()
        yield w
    finally:
        await w.close()


async def _poll(check: Callable[[], list[str]], deadline: float) -> list[str]:
    end = time.monotonic() + deadline
    while True:
        missing = check()
        if not missing or time.monotonic() > end:
            return missing
        await asyncio.sleep(0.2)


# -- the tests --------------------------------------------------------------------------------


def test_every_block_has_a_marker_the_test_knows() -> None:
    blocks = parse_blocks(DOC.read_text())
    check_markers(blocks)
    kinds = {b.marker for b in blocks}
    assert kinds >= {"migration-step", "migration-output", "migration-drill", "migration-serve"}
    assert {b.arg for b in blocks if b.marker == "migration-drill"} == DRILLS


def test_the_checker_refuses_what_it_cannot_run() -> None:
    with pytest.raises(AssertionError, match="not a marker"):
        check_markers(parse_blocks("```sh\necho unmarked\n```\n"))
    with pytest.raises(AssertionError, match="not a marker"):
        check_markers(parse_blocks("```sh migration-stpe\necho typo\n```\n"))
    with pytest.raises(AssertionError, match="unknown drill"):
        check_markers(parse_blocks("```sh migration-drill disk-full\ntrue\n```\n"))
    with pytest.raises(AssertionError, match="must follow"):
        check_markers(parse_blocks("```text migration-output\nok\n```\n"))
    with pytest.raises(AssertionError, match="never closes"):
        parse_blocks("```sh migration-step\necho\n")


def test_outputs_compare_in_substance() -> None:
    names = {"CUTOVER_URL": "http://127.0.0.1:4242"}
    actual = "2026-12-04 21:19:02 #7 rollback at http://127.0.0.1:4242: 4.24% (5/118)\nz=4.46\n"
    assert (
        missing_lines("<time> #3 rollback at $CUTOVER_URL: 1.00% (1/2)\nz=2", actual, names) == []
    )
    assert missing_lines("z=#\nrollback", actual, names) == ["rollback"]  # order counts
    assert missing_lines("promote", actual, names) == ["promote"]


def test_sections_are_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\ncompat:\n  profile: x\n\n  # note\n  rules: []\nb: 2\n")
    replace_section(path, "compat:\n  profile: y\n")
    assert path.read_text() == "a: 1\ncompat:\n  profile: y\nb: 2\n"


# -- the Kubernetes blocks' checker -------------------------------------------------------------

CHART_CONFIG = """admin: {listen: "127.0.0.1:9901", tokens: {oncall: "${CUTOVER_ADMIN_TOKEN}"}}
backends:
  python: {url: "${PYTHON_URL}"}
  go: {url: "http://alert-history-go:8080"}
routes:
  - {name: default, split: {go: 0, python: 100}, fallback: [python]}
"""
HELM_FILES = {
    "values.yaml": (
        "replicaCount: 2\nstorage: {type: postgresql}\nredis: {enabled: true}\n"
        'extraEnv: [{name: PYTHON_URL, value: "http://alert-history-python:8080"}]\n'
    ),
    "chart.yaml": CHART_CONFIG,
    "with-listen.yaml": CHART_CONFIG + "listen: 0.0.0.0:8080\n",
    "with-capture.yaml": CHART_CONFIG.replace(
        "fallback: [python]}", "fallback: [python], capture: captures/default.jsonl}"
    ),
    # what the runbook said before the chart existed
    "old-values.yaml": "mode: gateway\nreplicaCount: 2\nexistingSecret: cutover-env\n",
}
HELM_ENV = {
    "PATH": os.environ["PATH"],
    "TOKEN": "oncall-token-0123456789abcdef",
    "DB": "postgresql://cutover@alert-history-db:5432/cutover",
}
INSTALL = """\
helm upgrade --install cutover ./helm/cutover -n alert-history \\
  -f values.yaml --set-file config=chart.yaml \\
  --set-string secret.values.CUTOVER_ADMIN_TOKEN="$TOKEN" \\
  --set-string secret.values.CUTOVER_DATABASE_URL="$DB" \\
  --set-string secret.values.CUTOVER_REDIS_URL=redis://alert-history-redis:6379/0
kubectl -n alert-history rollout status deployment/cutover --timeout=5m
"""
UPGRADE = (
    "helm upgrade cutover ./helm/cutover -n alert-history --reuse-values"
    " --set-file config=chart.yaml\n"
)


@pytest.fixture
def helm_work(tmp_path: Path) -> Path:
    for name, text in HELM_FILES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_helm_block_renders_what_it_would_install(helm_work: Path) -> None:
    releases = runbook_helm.Releases()
    (install,) = runbook_helm.plan(INSTALL, "install", HELM_ENV, helm_work, releases)
    # the next block sees the files as the document has them by then
    (helm_work / "chart.yaml").write_text(CHART_CONFIG.replace("go: 0, python: 100", "python: 100"))
    (upgrade,) = runbook_helm.plan(UPGRADE, "upgrade", HELM_ENV, helm_work, releases)
    first, second = runbook_helm.check(install), runbook_helm.check(upgrade)
    deployment = first.one("Deployment")
    assert deployment["metadata"] == {**deployment["metadata"], "name": "cutover"}
    assert deployment["metadata"]["namespace"] == "alert-history"
    assert deployment["spec"]["replicas"] == 2
    assert first.secret_env() == {
        "CUTOVER_ADMIN_TOKEN": HELM_ENV["TOKEN"],
        "CUTOVER_DATABASE_URL": HELM_ENV["DB"],
        "CUTOVER_REDIS_URL": "redis://alert-history-redis:6379/0",
    }
    assert first.pod_env()["PYTHON_URL"] == "http://alert-history-python:8080"
    assert "split: {go: 0, python: 100}" in first.config_text()
    assert 'redis: "${CUTOVER_REDIS_URL}"' in first.config_text()
    # --reuse-values: the install's values (secrets, replicas) with the new config
    assert "split: {python: 100}" in second.config_text()
    assert second.secret_env() == first.secret_env()
    assert second.one("Deployment")["spec"]["replicas"] == 2


HELM_FAILURES = {
    "the runbook's guess": (
        "kubectl -n alert-history create secret generic cutover-env --from-env-file=cutover.env\n"
        "helm upgrade --install cutover ./helm/cutover -n alert-history \\\n"
        "  -f old-values.yaml --set-file config=chart.yaml\n",
        "additional properties 'existingSecret' not allowed",
    ),
    "not shell": ("helm upgrade --install cutover (\n", "not valid shell"),
    "a file no block wrote": (
        INSTALL.replace("-f values.yaml", "-f nowhere.yaml"),
        "-f nowhere.yaml: no earlier block wrote it",
    ),
    "a config no block wrote": (
        INSTALL.replace("config=chart.yaml", "config=nowhere.yaml"),
        "--set-file config=nowhere.yaml: no earlier block wrote it",
    ),
    "an unset variable": (
        INSTALL.replace('"$TOKEN"', '"$CUTOVER_ADMIN_TOKEN"'),
        "the shell cannot expand",
    ),
    "a release not installed": (UPGRADE, "no earlier block installed release 'cutover'"),
    "an unknown flag": (
        INSTALL.replace("-n alert-history", "-n alert-history --frobnicate"),
        "flag '--frobnicate' is not one the runbook checker knows",
    ),
    "nothing to render": ("helm rollback cutover 1\n", "'helm rollback' renders nothing"),
    "only kubectl": (
        "kubectl -n alert-history rollout restart deployment/cutover\n",
        "no helm install, upgrade or template to render",
    ),
    "another command": ("grep -v listen cutover.yaml > chart.yaml\n" + INSTALL, "'grep' in a"),
    "another chart": (
        INSTALL.replace("./helm/cutover", "./charts/cutover"),
        "chart './charts/cutover' is not the repository's helm/cutover",
    ),
    "a pipe": (
        "helm template cutover ./helm/cutover -f values.yaml | kubectl apply -f -\n",
        "'|' in a helm command",
    ),
    "a key the chart owns": (
        INSTALL.replace("config=chart.yaml", "config=with-listen.yaml"),
        "cutover: config.listen is set by the chart: use containerPorts.http instead",
    ),
    "a secret nothing provides": (
        INSTALL.replace("secret.values.CUTOVER_ADMIN_TOKEN=", "secret.values.ADMIN_TOKEN="),
        "cutover: the config needs the secret CUTOVER_ADMIN_TOKEN",
    ),
    "replicas on SQLite": (
        INSTALL.replace("-n alert-history", "-n alert-history --set storage.type=sqlite", 1),
        "cutover: replicaCount=2 needs storage.type=postgresql and redis.enabled=true",
    ),
    "an object Kubernetes refuses": (
        INSTALL.replace(  # a typo the chart's schema lets through, the API server does not
            "-n alert-history",
            "-n alert-history --set tolerations[0].operator=Exists,tolerations[0].efect=NoSchedule",
            1,
        ),
        "Deployment cutover is not valid",
    ),
    "a config the pod refuses": (
        INSTALL.replace("config=chart.yaml", "config=with-capture.yaml"),
        "fails `cutover check-config`",
    ),
}


@pytest.mark.parametrize(("block", "message"), HELM_FAILURES.values(), ids=list(HELM_FAILURES))
def test_a_helm_block_that_cannot_be_rendered_fails(
    helm_work: Path, block: str, message: str
) -> None:
    releases = runbook_helm.Releases()
    with pytest.raises(runbook_helm.HelmBlockError, match=re.escape(message)) as failed:
        for command in runbook_helm.plan(block, "MIGRATION.md:7", HELM_ENV, helm_work, releases):
            runbook_helm.check(command)
    assert str(failed.value).startswith("MIGRATION.md:7")


async def test_the_runbook_runs(world: World) -> None:
    blocks = parse_blocks(DOC.read_text())
    check_markers(blocks)
    names = {k: v for k, v in world.names.items() if "://" in v or v.startswith("127.0.0.1:")}
    last_output: str | None = None
    timings: list[tuple[float, str]] = []
    for block in blocks:
        started = time.monotonic()
        if block.marker == "migration-env":
            exported = re.findall(r"^export (.+)$", block.text, re.M)
            for line in exported:
                for pair in shlex.split(line, comments=True):
                    name = pair.split("=", 1)[0]
                    assert name in world.names, f"{block.where()}: the test does not set {name}"
        elif block.marker == "migration-file":
            (world.work / block.arg).write_text(block.text)
        elif block.marker == "migration-section":
            replace_section(world.work / block.arg, block.text)
        elif block.marker == "migration-serve":
            world.serve(block.text)
        elif block.marker in RUNNABLE:
            last_output = await world.run(block)
            timings.append((time.monotonic() - started, block.where()))
            continue
        elif block.marker == "migration-output":
            assert last_output is not None
            missing = missing_lines(block.text, last_output, names)
            if missing:
                raise AssertionError(
                    f"{block.where()}: not in the output: {missing}\n{last_output}\n"
                    f"--- GET /admin/parity\n{await world.admin_json('/admin/parity')}"
                )
        elif block.marker == "migration-log":
            missing = await _poll(
                lambda b=block: missing_lines(b.text, world.gateway_log(), names), 15.0
            )
            assert not missing, f"{block.where()}: not in the gateway's log: {missing}"
        elif block.marker == "migration-drill":
            bash_syntax(block)
            await world.drill(block.arg)
        elif block.marker == "migration-helm":
            await world.helm(block)
        timings.append((time.monotonic() - started, block.where()))
        last_output = None
    for seconds, where in sorted(timings, reverse=True)[:8]:  # shown with -s: where time goes
        print(f"{seconds:6.1f}s  {where}")
    assert world.renders, "no Kubernetes block was rendered"
    for rendered in world.renders:
        await rendered  # a block that does not render fails here, naming its line
    assert world.pagerduty.problems == []  # every event PagerDuty got was a valid one
