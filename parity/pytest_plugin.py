"""pytest plugin: structural parity assertions between two running implementations.

Registered through the `pytest11` entry point, so installing cutover is enough:

    pytest --parity-primary http://python:8080 --parity-candidate http://go:8080

    def test_history(parity):
        parity.get("/history?limit=10")          # fails on any real difference

    def test_webhook(parity):
        parity.post("/webhook", json={"alerts": [...]}, ignore=["$.received_at"])

Each call sends the request to the primary and the candidate, and — to learn the primary's own
noise (timestamps, random ids, ordering) — to `--parity-secondary` or to the primary a second
time (safe methods only: a POST is never sent to the primary twice). A field counts only when
the candidate differs from the primary there and the primary did not differ from itself
(Diffy's rule, `parity.noise`); `--parity-config FILE` adds ignore paths, tolerances, array keys
and unordered arrays (the `parity:` section). Without the two options, tests using the fixture
are skipped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pytest

# Everything else is imported when a test asks for the fixture: installing cutover must not
# slow down the start of every pytest run.
if TYPE_CHECKING:
    from cutover.parity.config import ParityConfig
    from cutover.parity.corpus import CorpusRequest
    from cutover.parity.diff import Difference, Reply

__all__ = ["ParityClient", "ParityResult"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "structural comparison of two implementations (cutover)")
    group.addoption("--parity-primary", metavar="URL", help="base URL of the known-good side")
    group.addoption("--parity-candidate", metavar="URL", help="base URL of the side under test")
    group.addoption(
        "--parity-secondary", metavar="URL", help="a second copy of the primary, for noise"
    )
    group.addoption(
        "--parity-config", metavar="FILE", help="YAML with a parity: section (ignore rules, ...)"
    )
    group.addoption(
        "--parity-timeout", metavar="SECONDS", type=float, default=10.0, help="per request"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "parity: compares two implementations (cutover)")


@dataclass(frozen=True, slots=True)
class ParityResult:
    """What one comparison found. `reported` are the differences that count."""

    method: str
    path: str
    primary: Reply
    candidate: Reply
    differences: tuple[Difference, ...]  # every candidate-vs-primary difference
    noise: frozenset[str]  # fields where the primary differed from itself
    reported: tuple[Difference, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.reported

    def json(self, side: str = "candidate") -> Any:
        """The decoded JSON body of one side."""
        import orjson

        return orjson.loads(getattr(self, side).body)

    def explain(self) -> str:
        from cutover.parity.diff import preview

        lines = [f"parity: {self.method} {self.path}: the candidate differs from the primary"]
        width = max((len(d.path) for d in self.reported), default=0)
        for d in self.reported[:30]:
            lines.append(
                f"  {d.path:<{width}}  {d.kind:<7}  primary: {preview(d.left, 80)}"
                f"  candidate: {preview(d.right, 80)}"
            )
        if len(self.reported) > 30:
            lines.append(f"  … and {len(self.reported) - 30} more")
        if self.noise:
            lines.append(f"  ({len(self.noise)} noisy field(s) ignored: the primary varies there)")
        return "\n".join(lines)


class ParityClient:
    """The `parity` fixture: send a request to both sides and assert they match."""

    def __init__(
        self,
        primary: str,
        candidate: str,
        secondary: str | None = None,
        config: ParityConfig | None = None,
        timeout: float = 10.0,
    ) -> None:
        from cutover.parity.config import ParityConfig

        self.primary = primary
        self.candidate = candidate
        self.secondary = secondary
        self.config = config or ParityConfig()
        self.timeout = timeout

    # -- asserting calls -----------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> ParityResult:
        __tracebackhide__ = True
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> ParityResult:
        __tracebackhide__ = True
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> ParityResult:
        __tracebackhide__ = True
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> ParityResult:
        __tracebackhide__ = True
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> ParityResult:
        __tracebackhide__ = True
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> ParityResult:
        __tracebackhide__ = True
        return self.request("DELETE", path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> ParityResult:
        """Compare and fail the test (AssertionError) on any reported difference."""
        __tracebackhide__ = True
        result = self.compare(method, path, **kwargs)
        if not result.ok:
            raise AssertionError(result.explain())
        return result

    # -- the comparison ------------------------------------------------------------------

    def compare(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        ignore: Iterable[str] = (),
        samples: int = 1,
    ) -> ParityResult:
        """Compare without asserting. `samples` > 1 repeats the request (more noise learned);
        `ignore` adds path patterns to the configured ones for this call."""
        import orjson

        from cutover.parity.corpus import CorpusRequest
        from cutover.parity.diff import compare, compile_pattern, endpoint_of
        from cutover.parity.noise import Sample, analyse

        if not path.startswith("/"):
            raise ValueError(f"parity: path must start with '/', got {path!r}")
        if samples < 1:
            raise ValueError("parity: samples must be at least 1")
        hdrs = dict(headers or {})
        data: bytes | None
        if json is not None:
            data = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        else:
            data = body.encode() if isinstance(body, str) else body
        req = CorpusRequest(method.upper(), path, tuple(hdrs.items()), data)
        rules = self.config.rules
        extra = tuple(compile_pattern(p) for p in ignore)
        if extra:
            rules = replace(rules, ignore=rules.ignore + extra)
        rounds = _run(self._rounds(req, samples))
        endpoint = endpoint_of(req.method, req.path, self.config.endpoints)
        raw_sets = []
        noise: set[str] = set()
        found: list[Sample] = []
        for p, c, n in rounds:
            diffs = compare(p, c, rules)
            noisy = frozenset(d.field for d in compare(p, n, rules)) if n is not None else None
            noise |= noisy or set()
            raw_sets.append(diffs)
            found.append(Sample(endpoint, {d.field: d.kind for d in diffs}, noisy))
        (stats,) = analyse(found, self.config.thresholds)
        counted = {f.field for f in stats.reported}
        first_p, first_c, _ = rounds[0]
        differences = tuple(raw_sets[0])
        reported = tuple(d for d in differences if d.field in counted)
        if not reported:  # a field may differ only in a later round
            reported = tuple(d for ds in raw_sets for d in ds if d.field in counted)
        return ParityResult(
            method=req.method,
            path=req.path,
            primary=first_p,
            candidate=first_c,
            differences=differences,
            noise=frozenset(noise),
            reported=reported,
        )

    async def _rounds(
        self, req: CorpusRequest, samples: int
    ) -> Sequence[tuple[Reply, Reply, Reply | None]]:
        from cutover.parity.runner import SAFE_METHODS, fetch, new_session

        limit = 64 * 1024 * 1024
        noise_url = self.secondary or (self.primary if req.method in SAFE_METHODS else None)
        sessions = [new_session(2) for _ in range(3)]
        try:
            out = []
            for _ in range(samples):
                p, c = await asyncio.gather(
                    fetch(sessions[0], self.primary, req, self.timeout, limit),
                    fetch(sessions[1], self.candidate, req, self.timeout, limit),
                )
                n = None
                if noise_url is not None:
                    n = await fetch(sessions[2], noise_url, req, self.timeout, limit)
                out.append((p, c, n))
            return out
        finally:
            for s in sessions:
                await s.close()


def _run(coro: Any) -> Any:
    """Run a coroutine to completion from sync or async test code alike."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def parity(request: pytest.FixtureRequest) -> ParityClient:
    """Compare the two implementations given by --parity-primary and --parity-candidate."""
    opt = request.config.getoption
    primary, candidate = opt("parity_primary"), opt("parity_candidate")
    if not primary or not candidate:
        pytest.skip("parity: give --parity-primary URL and --parity-candidate URL to compare")
    from cutover.parity.config import ParityConfig, load_parity_file

    path = opt("parity_config")
    config = load_parity_file(path) if path else ParityConfig()
    return ParityClient(
        primary,
        candidate,
        secondary=opt("parity_secondary"),
        config=config,
        timeout=opt("parity_timeout"),
    )
