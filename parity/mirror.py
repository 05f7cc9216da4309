"""One mirror job's exchange: the copy to the candidate, the primary asked again for its noise,
the comparison, and what came of it (an `Outcome`).

Nothing here touches the gateway's state: the gateway's own mirror workers and the mirror
process (`parity.mirror_process`) run the same exchange and store its row; each books what
came of it where it runs (`parity.book`: the counts, the parity windows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from cutover.parity.corpus import redact_query
from cutover.parity.diff import (
    Difference,
    DiffRules,
    Reply,
    compare,
    endpoint_of,
    make_reply,
)
from cutover.parity.noise import Sample
from cutover.parity.report import difference_json
from cutover.parity.runner import SAFE_METHODS
from cutover.proxy.headers import upstream_headers
from cutover.proxy.pool import (
    ConnectFailed,
    ConnectTimeout,
    ExchangeTimeout,
    LeanPool,
    UpstreamFailure,
    send_whole,
)

if TYPE_CHECKING:
    from cutover.parity.config import ParityConfig
    from cutover.proxy.upstreams import Upstream

__all__ = [
    "MIRROR_HEADER",
    "Booking",
    "MirrorJob",
    "Outcome",
    "RawJob",
    "decoded",
    "exchange",
    "sample_of",
]

MIRROR_HEADER = "X-Cutover-Mirror"
STORED_DIFFERENCES = 20  # differences kept per stored result, for examples
# Comparisons of pairs whose bodies add up to more than this run in a thread; smaller ones run
# inline (a thread hand-off costs more than they do, and holds the GIL all the same).
COMPARE_INLINE = 64 * 1024
# Methods whose requests go without a Content-Length when they carry no body.
_BODYLESS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT"))


@dataclass(frozen=True, slots=True)
class MirrorJob:
    """One request to shadow: what the client sent and what the primary answered."""

    route: str
    to: str
    primary: str
    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    peer: str
    scheme: str
    host: str | None
    request_id: str
    status: int
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes

    def to_wire(self) -> tuple[Any, ...]:
        """Plain values (for the pipe to the mirror process); `of_wire` is the inverse."""
        return (
            self.route,
            self.to,
            self.primary,
            self.method,
            self.raw_path,
            tuple(self.headers.items()),
            self.body,
            self.peer,
            self.scheme,
            self.host,
            self.request_id,
            self.status,
            self.response_headers,
            self.response_body,
        )

    @classmethod
    def of_wire(cls, values: tuple[Any, ...]) -> MirrorJob:
        fields = list(values)
        fields[5] = CIMultiDictProxy(CIMultiDict(fields[5]))
        return cls(*fields)

    @classmethod
    def of_raw(cls, values: RawJob) -> MirrorJob:
        """The job of a fast-path copy (`raw_job`): its header fields decoded here, by whoever
        runs the job (the mirror process; the gateway's own workers), as `decoded` does."""
        (route, to, primary, method, raw_path, headers, body, peer, scheme, request_id,
         status, response_headers, response_body) = values  # fmt: skip
        fields = CIMultiDictProxy(CIMultiDict(decoded(headers)))
        return cls(route, to, primary, method, raw_path, fields, body, peer, scheme,
                   fields.get("Host"), request_id, status, decoded(response_headers),
                   response_body)  # fmt: skip


# A fast-path copy as the gateway hands it on, its header fields still as the client and the
# primary sent them: (route, to, primary, method, raw_path, request header fields, body, peer,
# scheme, request_id, status, response header fields, response body). Plain values (the pipe
# to the mirror process carries it as is); `MirrorJob.of_raw` makes the job of it. Decoding the
# headers (a dict of them) is left to whoever runs the job: off the gateway's loop, with the
# mirror process.
RawJob = tuple[
    str, str, str, str, str, Sequence[tuple[bytes, bytes]], bytes, str, str, str, int,
    Sequence[tuple[bytes, bytes]], bytes,
]  # fmt: skip


def decoded(fields: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """Raw header fields decoded as aiohttp decodes them: UTF-8, bytes that are not kept as
    surrogate escapes (`surrogateescape`: encoding them back gives the same bytes)."""
    return tuple(
        (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        for name, value in fields
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one mirror job came to.

    `failure`: why the candidate gave no answer (`connect`, `timeout`, `error`), counted; it is
    still compared (status 0). `skipped`: why nothing was compared (`response_too_large`).
    `row`: the `parity_results` columns after `ts` (route, endpoint, method, path, primary and
    candidate backends and statuses, fields, noise fields, differences as JSON), None when
    skipped; `sample`: the noise analysis' view of it (None when skipped).
    """

    route: str
    failure: str | None
    skipped: str | None
    row: tuple[Any, ...] | None = None
    sample: Sample | None = None

    def booking(self, row_id: int | None) -> Booking:
        """What the gateway books of this outcome once its row was stored as `row_id` (None:
        the store refused it, or nothing was compared)."""
        return Booking(self.route, self.failure, self.skipped, row_id, self.sample)


class Booking(NamedTuple):
    """What the own workers book of one mirror job (counters, the route's parity window): all
    of an outcome but its row, which is stored by then. (The mirror process books its
    outcomes itself and sends the gateway a `parity.book.Tally`.)"""

    route: str
    failure: str | None
    skipped: str | None
    row_id: int | None
    sample: Sample | None  # None: nothing compared


def sample_of(endpoint: str, fields: str, noise_fields: str | None) -> Sample:
    """The noise analysis' view of a stored result (its JSON columns decoded)."""
    return Sample(
        endpoint,
        orjson.loads(fields),
        frozenset(orjson.loads(noise_fields)) if noise_fields is not None else None,
    )


async def exchange(
    job: MirrorJob,
    upstreams: Mapping[str, Upstream],
    settings: ParityConfig,
    request_id_name: str,
) -> Outcome | None:
    """Send `job` to its candidate (and, for safe methods, once more to its primary), compare;
    None when the candidate left the config since the request was sampled."""
    candidate_up = upstreams.get(job.to)
    primary_up = upstreams.get(job.primary)
    if candidate_up is None:
        return None
    ask_noise = settings.mirror.noise and job.method in SAFE_METHODS and primary_up is not None
    if ask_noise:
        assert primary_up is not None
        candidate, noise = await asyncio.gather(
            _send(candidate_up, job, settings, request_id_name),
            _send(primary_up, job, settings, request_id_name),
        )
    else:
        candidate, noise = await _send(candidate_up, job, settings, request_id_name), None
    failure = (candidate.error or "error") if candidate.status == 0 else None
    if candidate.error == "body_too_large":
        return Outcome(job.route, failure, "response_too_large")
    if noise is not None and (noise.status == 0 or noise.error is not None):
        noise = None  # the primary did not answer again: no noise sample this time
    await asyncio.sleep(0)  # between phases, ready primary callbacks go first
    size = len(job.response_body) + len(candidate.body)
    if size > COMPARE_INLINE:
        # A thread keeps a large comparison from holding the event loop in one piece.
        sample, differences = await asyncio.to_thread(compare_job, job, candidate, noise, settings)
    else:
        sample, differences = compare_job(job, candidate, noise, settings)
        await asyncio.sleep(0)
    row = (
        job.route,
        sample.endpoint,
        job.method,
        redact_query(job.raw_path),
        job.primary,
        job.to,
        job.status,
        candidate.status,
        orjson.dumps(dict(sample.raw)).decode(),
        orjson.dumps(sorted(sample.noise)).decode() if sample.noise is not None else None,
        orjson.dumps([difference_json(d) for d in differences[:STORED_DIFFERENCES]]).decode(),
    )
    return Outcome(job.route, failure, None, row, sample)


async def _send(
    upstream: Upstream, job: MirrorJob, settings: ParityConfig, request_id_name: str
) -> Reply:
    """One copy (or noise request) out on the backend's lean pool (`proxy.pool`, the fast
    path's client: a third of aiohttp's CPU a request, and the mirror's CPU is what it can
    compare); a failure becomes a `Reply` with status 0 and its kind: connect, timeout, error.

    A kept-alive connection the backend closed while idle gets the copy once more on a new
    one (`send_whole`): the backend never answered on it, so it most likely never read it."""
    headers = upstream_headers(
        job.headers,
        peer=job.peer,
        scheme=job.scheme,
        host=job.host,
        host_header=upstream.backend.upstream_host,
        request_id_name=request_id_name,
        request_id=job.request_id,
        content_length=None,
    )
    headers[MIRROR_HEADER] = "1"
    pool = upstream.lean
    mirror = settings.mirror
    try:
        request = request_bytes(pool, job.method, job.raw_path, headers, job.body)
    except UnicodeError:  # a target or field that was not bytes as received: cannot be sent
        return Reply(0, error="error")
    deadline = asyncio.get_running_loop().time() + mirror.timeout
    try:
        whole = await send_whole(
            pool, request, deadline, max_body=mirror.max_body, head_only=job.method == "HEAD"
        )
    except (ConnectTimeout, ExchangeTimeout):
        return Reply(0, error="timeout")
    except ConnectFailed:
        return Reply(0, error="connect")
    except (UpstreamFailure, OSError):
        return Reply(0, error="error")
    error = "body_too_large" if whole.cut else None
    return make_reply(whole.status, decoded(whole.headers), whole.body, error, mirror.max_body)


def request_bytes(
    pool: LeanPool, method: str, raw_path: str, headers: CIMultiDict[str], body: bytes
) -> bytes:
    """The request as sent: `raw_path` after the backend's base path, the fields as the client
    sent them (`decoded`'s surrogate escapes give back its bytes), the Host the gateway would
    send (the pool's when none), and the body with its length."""
    encode = _field_bytes
    parts = [encode(method) + b" " + pool.base_path + encode(raw_path) + b" HTTP/1.1\r\n"]
    if "Host" not in headers:
        parts.append(pool.fallback_host)
    parts.extend(encode(name) + b": " + encode(value) + b"\r\n" for name, value in headers.items())
    if body or method not in _BODYLESS:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def _field_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def compare_job(
    job: MirrorJob, candidate: Reply, noise: Reply | None, settings: ParityConfig
) -> tuple[Sample, list[Difference]]:
    """The candidate's differences from the primary's answer, and the sample the noise
    analysis keeps (raw differing fields, and the primary's own noise when asked again)."""
    primary = make_reply(
        job.status, job.response_headers, job.response_body, max_decoded=settings.mirror.max_body
    )
    rules = settings.rules
    differences = compare(primary, candidate, rules)
    noisy = compare(primary, noise, rules) if noise is not None else None
    # (nothing to dismiss: no third comparison; nor when the second reading is the first's
    # very answer, whose comparison with the candidate's would be the first one again)
    if noise is not None and differences and not _same_answer(primary, noise, rules):
        # The primary's second reading is taken after the candidate's: a field where the
        # candidate agrees with it changed between the readings (a write landed in between),
        # it is not the candidate's difference.
        later = {d.field for d in compare(noise, candidate, rules)}
        differences = [d for d in differences if d.field in later]
    raw: dict[str, str] = {}
    for d in differences:
        raw.setdefault(d.field, d.kind)
    sample = Sample(
        endpoint_of(job.method, job.raw_path, settings.endpoints),
        raw,
        frozenset(d.field for d in noisy) if noisy is not None else None,
    )
    return sample, differences


def _same_answer(first: Reply, second: Reply, rules: DiffRules) -> bool:
    """Whether `compare` sees the same answer in both: status, body bytes, the compared headers
    and the content type (it says how a body is read)."""
    if first.status != second.status or first.body != second.body:
        return False
    names = ("content-type", *rules.headers)
    return all(first.headers.get(name) == second.headers.get(name) for name in names)
