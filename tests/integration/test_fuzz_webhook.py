"""Property-based fuzzing of the alert intake through a real gateway, on SQLite and PostgreSQL.

Alertmanager's own webhook (`alertmanager-webhook-v4.json`, captured from a real one) is mutated
in structure, types and strings (NUL, control characters, huge and odd numbers, deep nesting),
then in its bytes (unpaired surrogate escapes, invalid UTF-8, numbers beyond a double, repeated
keys, truncation), and posted with a few HTTP variations (method, encoding, size, credentials)
to `/webhook/proxy` and to a generic-mapping path. Whatever arrives:

- the answer is one of 200, 400, 401, 405, 413, 415 (503 needs a store outage) — never a 500;
- every answer is a JSON body; every 400 lists problems whose paths lead into the document;
- a 200 means the alerts are in the store: one row per accepted alert, in order, holding the
  labels and annotations as sent, and one history job each.

`POST /classification/classify` shares the parser: its mutated alerts get 200/400/405/413/415.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import fuzz, json_values, numbers, scalars, text
from tests.integration.alerts_helpers import AlertsGateway

REFERENCE = orjson.loads((Path(__file__).parent / "alertmanager-webhook-v4.json").read_bytes())
TOKEN = "fuzz-intake-token"
MAX_BODY = 64 * 1024
ALLOWED = {200, 400, 401, 405, 413, 415}
GENERIC = {
    "alerts": "alerts",
    "labels": "labels",
    "annotations": "annotations",
    "status": "status",
    "starts_at": "startsAt",
    "ends_at": "endsAt",
    "fingerprint": "fingerprint",
    "generator_url": "generatorURL",
}
ALERTS_CONFIG: dict[str, Any] = {
    "paths": [
        "/webhook/proxy",
        {"path": "/hooks/generic", "format": "generic", "mapping": GENERIC},
    ],
    "auth": {"bearer_token": TOKEN},
    "max_body": MAX_BODY,
    "forward_to_route": "default",
    "filters": {
        "rules": [
            {"name": "noise", "action": "deny", "matchers": ['severity=~"none|debug"']},
            {"name": "hold", "action": "delay", "delay": "1m", "matchers": ['severity="warning"']},
            {"name": "prio", "action": "deny", "matchers": ['priority>"5"']},
        ]
    },
    "routing": {
        "targets": ["default-target"],
        "routes": [{"matchers": ['service=~"pro.*"'], "targets": ["proxy-team"]}],
    },
}
# A string placed in the document, to be replaced in the encoded bytes by what JSON encoders
# refuse to write: the `n`-th of BYTE_MUTATIONS.
MARK = "\ue000mark"
DEEP = "\ue000deep"  # `DEEP` + depth (4 digits) + l|d + value index: a deep value, see `_encode`
_DEEP_RE = re.compile(b'"' + re.escape(DEEP.encode()) + rb'(\d{4})([ld])(\d{2})"')
SCALAR_BYTES = (b"1", b'"x"', b"null", b"true", b"-1.5e3", b"{}", b"[]", b'"\\u0000"')
BYTE_MUTATIONS = (
    b'"\\ud800"',
    b'"a\\udfffb"',
    b'"\\ud83d"',
    b'"\\u0000"',
    b'"\xff\xfe"',
    b'"\xc3"',
    b"1e400",
    b"-1e400",
    b"123456789012345678901234567890",
    b"NaN",
    b"[" * 1100 + b"]" * 1100,
    b"{" + b'"a":{' * 1100 + b"}" * 1101,
)


# -- the mutations --------------------------------------------------------------------------


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `doc`, the root included."""
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*path, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


# Strategies are built once: building one inside a draw costs more than the draw.
VALUES = json_values()
SMALL_VALUES = json_values(4)
SCALARS = scalars()
TEXT = text()
NUMBERS = numbers()
OPS = st.sampled_from(
    ["field", "replace", "scalar", "delete", "insert", "string", "key", "wrap", "dup", "mark",
     "deep"]
)  # fmt: skip
# The fields the intake reads, which a blind mutation seldom hits.
FIELDS = st.sampled_from(
    [("labels", "alertname"), ("fingerprint",), ("status",), ("startsAt",), ("endsAt",),
     ("generatorURL",), ("labels",), ("annotations",), ("labels", "severity"),
     ("labels", "priority"), ("annotations", "summary")]
)  # fmt: skip
FIELD_VALUES = st.one_of(TEXT, SCALARS, SMALL_VALUES)
MARKS = st.integers(0, len(BYTE_MUTATIONS) - 1)
DEPTHS = st.sampled_from([10, 60, 200, 1020])
KINDS = st.sampled_from(["list", "dict"])
DEEP_VALUES = st.integers(0, len(SCALAR_BYTES) - 1)
# The usual case first: Hypothesis leans towards the first choice.
EDITS = st.sampled_from(["none"] * 12 + ["dup-key", "truncate", "garbage", "pad"])
DUP_KEYS = st.sampled_from([b"[]", b"{}", b"null", b"[1]"])
PADS = st.sampled_from([MAX_BODY // 2, MAX_BODY + 1])
ENCODINGS = st.sampled_from(["identity"] * 10 + ["gzip", "gzip-broken", "br"])
# Credentials, right or wrong; bytes are sent as they are (not UTF-8, not base64).
AUTHS = st.sampled_from(
    [f"Bearer {TOKEN}"] * 30
    + [
        "",
        "Bearer wrong",
        "Basic Zm9vOmJhcg==",
        b"Bearer \xff\xfe",
        b"Basic \xff",
        b"Basic Zm9v\xc3",
    ]
)
REQUEST_IDS = st.sampled_from([None] * 20 + ["abc-1", "\u00e9t\u00e9", b"r\xff\xfe", b"\xc3"])
METHODS = st.sampled_from(["POST"] * 30 + ["GET", "PUT", "DELETE", "PATCH"])
PATHS = st.sampled_from(["/webhook/proxy"] * 3 + ["/hooks/generic"])


@st.composite
def mutated_document(draw: st.DrawFn, seed: Any = REFERENCE) -> Any:
    doc: Any = json.loads(_dumps(seed))  # a fresh copy
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        places = _paths(doc)
        path = places[draw(st.integers(min_value=0, max_value=len(places) - 1))]
        here = _get(doc, path)
        op = draw(OPS)
        alerts = doc.get("alerts", [doc]) if isinstance(doc, dict) else doc
        if op == "field" and isinstance(alerts, list) and alerts:
            alert = alerts[draw(st.integers(0, len(alerts) - 1))]
            field = draw(FIELDS)
            if isinstance(alert, dict) and (
                len(field) == 1 or isinstance(alert.get(field[0]), dict)
            ):
                _set(alert, field, draw(FIELD_VALUES))
        elif op == "replace":
            doc = _set(doc, path, draw(VALUES))
        elif op == "scalar":
            doc = _set(doc, path, draw(SCALARS))
        elif op == "delete" and path:
            del _get(doc, path[:-1])[path[-1]]
        elif op == "insert" and isinstance(here, dict):
            here[draw(TEXT)] = draw(SMALL_VALUES)
        elif op == "insert" and isinstance(here, list):
            here.insert(draw(st.integers(0, len(here))), draw(SMALL_VALUES))
        elif op == "string" and isinstance(here, str):
            at = draw(st.integers(0, len(here)))
            doc = _set(doc, path, here[:at] + draw(TEXT) + here[at:])
        elif op == "string":
            doc = _set(doc, path, draw(NUMBERS))
        elif op == "key" and isinstance(here, dict) and here:
            key = draw(st.sampled_from(sorted(here)))
            here[key + draw(TEXT)] = here.pop(key)
        elif op == "wrap":
            doc = _set(doc, path, [here] if draw(KINDS) == "list" else {"x": here})
        elif op == "dup" and isinstance(here, list) and here:
            here.extend(json.loads(_dumps(here[-1:])) * draw(st.integers(1, 5)))
        elif op == "mark":
            doc = _set(doc, path, f"{MARK}{draw(MARKS):02d}")
        elif op == "deep":  # written as bytes by `_encode`: this process would recurse
            depth, kind = draw(DEPTHS), draw(KINDS)
            doc = _set(doc, path, f"{DEEP}{depth:04d}{kind[0]}{draw(DEEP_VALUES):02d}")
    return doc


def _dumps(doc: Any) -> bytes:
    """JSON as a client may write it (integers of any size; orjson stops at 64 bits)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _encode(doc: Any) -> bytes:
    body = _dumps(doc)
    if MARK.encode() in body:
        for n, raw in enumerate(BYTE_MUTATIONS):
            body = body.replace(_dumps(f"{MARK}{n:02d}"), raw)
    if DEEP.encode() in body:
        body = _DEEP_RE.sub(_deep_bytes, body)
    return body


def _deep_bytes(m: re.Match[bytes]) -> bytes:
    """A value `depth` levels deep in lists or objects, as bytes (never as Python objects:
    building, walking or dumping a thousand levels recurses past this process's limit)."""
    depth, kind, value = int(m.group(1)), m.group(2), SCALAR_BYTES[int(m.group(3))]
    if kind == b"l":
        return b"[" * depth + value + b"]" * depth
    return b'{"a":' * depth + value + b"}" * depth


@st.composite
def request_for(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(mutated_document())
    body = _encode(doc)
    edit = draw(EDITS)
    if edit == "dup-key" and body.startswith(b"{"):
        body = b'{"alerts":' + draw(DUP_KEYS) + b"," + body[1:]
    elif edit == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif edit == "garbage":
        body += draw(st.binary(min_size=1, max_size=8))
    elif edit == "pad" and body.startswith(b"{") and len(body) > 2:
        body = b'{"pad":"' + b"p" * draw(PADS) + b'",' + body[1:]
    try:  # the document as the gateway reads it, edits included
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    headers = {"Content-Type": "application/json", "Authorization": draw(AUTHS)}
    request_id = draw(REQUEST_IDS)
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    encoding = draw(ENCODINGS)
    if encoding == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif encoding == "gzip-broken":
        body, headers["Content-Encoding"] = gzip.compress(body)[:-9], "gzip"
    elif encoding == "br":
        headers["Content-Encoding"] = "br"
    return {"method": draw(METHODS), "path": draw(PATHS), "body": body, "headers": headers,
            "doc": doc}  # fmt: skip


# -- checking an answer ---------------------------------------------------------------------

_PART = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]')


def _leads_into(doc: Any, path: str) -> bool:
    """Whether a problem's JSON path leads into `doc`: every step but the last exists."""
    path = path.removesuffix(" (mapped labels)")
    if not path.startswith("$"):
        return False
    parts: list[Any] = []
    pos = 1
    while pos < len(path):
        m = _PART.match(path, pos)
        if m is None:
            return False
        name, index, quoted = m.groups()
        if index is not None:
            parts.append(int(index))
        else:
            parts.append(name if name is not None else re.sub(r"\\(.)", r"\1", quoted))
        pos = m.end()
    here = doc
    for part in parts[:-1]:
        if isinstance(part, int) and isinstance(here, list) and part < len(here):
            here = here[part]
        elif isinstance(here, dict) and str(part) in here:
            here = here[str(part)]
        else:
            return False
    return True


def _alerts_of(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return doc
    alerts = doc.get("alerts") if isinstance(doc, dict) else None
    return alerts if isinstance(alerts, list) else [alerts]


async def _raw_request(
    url: str, method: str, path: str, headers: dict[str, str | bytes], body: bytes
) -> tuple[int, bytes]:
    """One request written byte for byte (a client library would refuse those header bytes)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode()
    for name, value in headers.items():
        head += name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        head += b"\r\n"
    writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


class Intake:
    """One gateway for every example of a test; what each answer leaves in its store."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.last_id = 0
        self.jobs = 0  # history jobs so far
        self.statuses: Counter[int] = Counter()

    async def new_rows(self) -> list[dict[str, Any]]:
        db = await self.gw.database()
        rows = await db.fetch(
            "SELECT id, fingerprint, alert FROM cutover_alerts WHERE id > $1 ORDER BY id",
            self.last_id,
        )
        if rows:
            self.last_id = rows[-1]["id"]
        return rows

    async def history_jobs(self) -> int:
        db = await self.gw.database()
        return await db.fetchval(
            "SELECT COUNT(*) FROM publishing_jobs WHERE target = 'backend:default'"
        )

    async def check(self, http: Any, req: dict[str, Any]) -> None:
        if any(isinstance(v, bytes) for v in req["headers"].values()):
            status, raw = await _raw_request(self.gw.url, req["method"], req["path"],
                                             req["headers"], req["body"])  # fmt: skip
        else:
            async with http.request(
                req["method"], self.gw.url + req["path"], data=req["body"], headers=req["headers"]
            ) as resp:
                status = resp.status
                raw = await resp.read()
        self.statuses[status] += 1
        assert status in ALLOWED, (status, raw[:500])
        answer = orjson.loads(raw)  # every answer is JSON
        if status == 400:
            error = answer["error"]
            assert error["code"] in {"invalid_json", "invalid_payload", "invalid_body"}, answer
            problems = error.get("problems", [])
            assert problems or error["code"] == "invalid_body", answer
            for problem in problems:
                assert problem["expected"], answer
                if error["code"] == "invalid_json":
                    assert problem["path"] == "$", answer
                else:
                    assert _leads_into(req["doc"], problem["path"]), (problem, req["doc"])
            assert await self.new_rows() == []  # nothing of a refused payload is stored
            return
        rows = await self.new_rows()
        if status != 200:
            assert rows == [], answer
            return
        alerts = _alerts_of(req["doc"])
        results = answer["alerts"]
        assert answer["received"] == len(results) == len(alerts), answer
        kept = [
            (sent, r) for sent, r in zip(alerts, results, strict=True) if r["result"] != "duplicate"
        ]
        assert answer["accepted"] == len(kept) == len(rows), (answer, rows)
        for (sent, result), row in zip(kept, rows, strict=True):
            stored = orjson.loads(row["alert"])
            assert row["fingerprint"] == result["fingerprint"] == stored["fingerprint"]
            if req["path"] == "/webhook/proxy":
                assert stored["labels"] == sent["labels"]
                assert stored["annotations"] == (sent.get("annotations") or {})
        self.jobs += len(rows)
        assert await self.history_jobs() == self.jobs  # one history copy per stored alert


@pytest.fixture(params=["sqlite", "postgresql"])
async def intake(request, ag: AlertsGateway) -> AsyncIterator[Intake]:  # type: ignore[no-untyped-def]
    checked = Intake(await ag.start(ALERTS_CONFIG, store=request.param))
    yield checked
    seen = checked.statuses
    counts = dict(sorted(seen.items()))
    print(f"\nwebhook fuzz on {request.param}: {sum(seen.values())} requests, {counts}")
    if sum(seen.values()) >= 100:  # the mutations reach both the store and the refusals
        assert seen[200] and seen[400], seen


@fuzz(1000)
@given(req=request_for())
async def test_fuzz_webhook_intake_never_500s(intake: Intake, http, req: dict[str, Any]) -> None:
    await intake.check(http, req)


def test_the_reference_payload_is_a_real_alertmanager_webhook() -> None:
    assert REFERENCE["version"] == "4" and len(REFERENCE["alerts"]) == 2
    assert _encode(REFERENCE) == orjson.dumps(REFERENCE)  # the encoder writes it as orjson does


# -- the classification API shares the parser ----------------------------------------------

CLASSIFY_ALLOWED = {200, 400, 405, 413, 415}
FORCES = st.sampled_from([True, False, None, "yes", 1])


@st.composite
def classify_request(draw: st.DrawFn) -> dict[str, Any]:
    alert = draw(mutated_document(REFERENCE["alerts"][0]))
    doc = {"alert": alert, "force": draw(FORCES)} if draw(st.booleans()) else alert
    body = _encode(doc)
    try:
        seen = orjson.loads(body)
    except orjson.JSONDecodeError:
        seen = None
    return {"method": draw(METHODS), "body": body, "doc": seen}


@pytest.fixture
async def classifier_url(ag: AlertsGateway) -> str:
    return (await ag.start(ALERTS_CONFIG)).url + "/classification/classify"


@fuzz(300)
@given(req=classify_request())
async def test_fuzz_classify_api_never_500s(classifier_url: str, http, req: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    async with http.request(req["method"], classifier_url, data=req["body"]) as resp:
        status, raw = resp.status, await resp.read()
    assert status in CLASSIFY_ALLOWED, (status, raw[:300])
    answer = orjson.loads(raw)
    if status == 400:
        for problem in answer["error"].get("problems", []):
            assert _leads_into(req["doc"], problem["path"]), (problem, req["doc"])
    elif status == 200:
        assert answer["result"]["severity"] in {"critical", "warning", "info", "noise"}
