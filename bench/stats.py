"""The arithmetic of ``cutover bench compare``: exact percentiles, ratios, spread, budgets.

Pure: no I/O, no clock, no randomness. Latencies are milliseconds.

**Percentiles are nearest-rank.** For ``n`` latencies sorted ascending ``x[1] <= ... <= x[n]``,
the p-th percentile (``0 < p <= 100``) is ``x[ceil(p / 100 * n)]``: the smallest latency that at
least p % of the requests did not exceed. ``p = 0`` gives the minimum and ``p = 100`` the
maximum. Every percentile is therefore a latency that was actually observed, and p50 <= p95 <=
p99 <= max always holds (Locust's own figures come from rounded buckets and can break both).

**Budgets** (``--expect``) are parsed by a small grammar, never ``eval``::

    budget     := comparison ("and" comparison)*
    comparison := product ("<=" | "<" | ">=" | ">") product
    product    := operand ("*" operand)*
    operand    := NUMBER | SIDE "." METRIC
    SIDE       := "a" | "b"
    METRIC     := "p50" | "p95" | "p99" | "max" | "rps" | "error_rate"

e.g. ``b.p95 <= 0.5 * a.p95 and b.error_rate <= a.error_rate``. Latency metrics are in ms,
``rps`` in requests per second, ``error_rate`` a fraction (0.01 = 1 %).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "METRICS",
    "SIDES",
    "Budget",
    "BudgetError",
    "BudgetResult",
    "ClauseResult",
    "Figures",
    "Sample",
    "SideSamples",
    "Spread",
    "cdf_points",
    "figure_text",
    "parse_budget",
    "percentile",
    "ratio",
    "spread",
    "summarize",
]

SIDES = ("a", "b")
METRICS = ("p50", "p95", "p99", "max", "rps", "error_rate")
LATENCY_METRICS = frozenset({"p50", "p95", "p99", "max"})


# --------------------------------------------------------------------------------------------------
# percentiles and figures


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of values already sorted ascending (see the module docstring)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    n = len(sorted_values)
    # p / 100 * n in exact decimal steps: 95 / 100 * 20 must be 19, not 19.000000000000004
    rank = math.ceil(round(p * n / 100, 9))
    return sorted_values[min(max(rank, 1), n) - 1]


@dataclass(frozen=True, slots=True)
class Figures:
    """What one side did, over one run or pooled over rounds; latencies in ms."""

    requests: int  # every request sent, failed or not
    errors: int
    error_rate: float  # errors / requests
    duration_s: float  # measured span the rate is computed over
    rps: float  # requests / duration_s
    min: float | None  # latencies of the successful requests only
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    lag_p99: float | None = None  # open model: p99 of how late requests left vs their schedule

    def metric(self, name: str) -> float | None:
        """One of METRICS by name."""
        if name not in METRICS:
            raise KeyError(name)
        return getattr(self, name)


def summarize(
    latencies: Iterable[float], errors: int, duration_s: float, lags: Iterable[float] = ()
) -> Figures:
    """Figures from the latencies of the successful requests, the failed count and the span.

    Failures count in ``requests`` and ``error_rate`` but not in the latency percentiles, so a side
    that fails fast cannot look fast.
    """
    ok = sorted(latencies)
    requests = len(ok) + errors
    lag = sorted(lags)
    return Figures(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        duration_s=duration_s,
        rps=requests / duration_s if duration_s > 0 else 0.0,
        min=ok[0] if ok else None,
        mean=math.fsum(ok) / len(ok) if ok else None,
        p50=percentile(ok, 50) if ok else None,
        p95=percentile(ok, 95) if ok else None,
        p99=percentile(ok, 99) if ok else None,
        max=ok[-1] if ok else None,
        lag_p99=percentile(lag, 99) if lag else None,
    )


def cdf_points(sorted_values: Sequence[float], max_points: int = 300) -> list[tuple[float, float]]:
    """(latency, fraction of requests at or below it) points for a CDF plot, at most about
    ``max_points`` of them, denser in the tail (p99, p99.9, ...) so the tail keeps its shape."""
    n = len(sorted_values)
    if n == 0:
        return []
    if n <= max_points:
        ranks = range(1, n + 1)
    else:
        levels = {i / (max_points - 20) for i in range(1, max_points - 20 + 1)}
        levels.update(1 - 10 ** (-k / 4) for k in range(4, 4 * 7))  # 0.9 .. 0.99999...
        ranks = sorted({max(1, math.ceil(round(q * n, 9))) for q in levels if 0 < q <= 1} | {n})
    return [(sorted_values[r - 1], r / n) for r in ranks]


# --------------------------------------------------------------------------------------------------
# ratios and spread


def ratio(b: float | None, a: float | None) -> float | None:
    """b / a, or None when it has no meaning (a missing figure, or a = 0)."""
    if a is None or b is None or a == 0:
        return None
    return b / a


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of a set of per-round values and their range."""

    median: float
    min: float
    max: float
    n: int


def spread(values: Iterable[float | None]) -> Spread | None:
    """Median and range of the values that exist; None when none does."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    n = len(present)
    mid = n // 2
    median = present[mid] if n % 2 else (present[mid - 1] + present[mid]) / 2
    return Spread(median=median, min=present[0], max=present[-1], n=n)


# --------------------------------------------------------------------------------------------------
# samples


@dataclass(frozen=True, slots=True)
class Sample:
    """One request as the locustfile recorded it.

    ``start`` is the wall time (s) the request was due to leave: its actual send time in the closed
    model, its scheduled time in the open model, where ``latency_ms`` therefore includes the time
    it waited behind schedule (``lag_ms``), so coordinated omission cannot hide it.
    """

    start: float
    name: str
    latency_ms: float
    ok: bool
    lag_ms: float = 0.0
    error: str = ""


@dataclass(slots=True)
class _Tally:
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    errors: int = 0

    def add(self, sample: Sample) -> None:
        if sample.ok:
            self.latencies.append(sample.latency_ms)
        else:
            self.errors += 1
        self.lags.append(sample.lag_ms)


class SideSamples:
    """Every sample of one side, per run (round) and per endpoint.

    ``add_run`` keeps the samples of one Locust run that started inside its measurement window
    ``[begin, end)``, whose length is the span rates are computed over.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[dict[str, _Tally], _Tally, float]] = []
        self.error_messages: Counter[str] = Counter()

    def add_run(
        self, samples: Iterable[Sample], begin: float | None = None, end: float | None = None
    ) -> int:
        """Add one run; returns the number of samples kept (0: nothing was measured).

        ``begin`` defaults to the first sample's start; without ``end`` the span runs to the
        last answer.
        """
        pool = list(samples)
        if begin is None:
            begin = min((s.start for s in pool), default=0.0)
        stop = math.inf if end is None else end
        kept = [s for s in pool if begin <= s.start < stop]
        endpoints: dict[str, _Tally] = {}
        overall = _Tally()
        for s in kept:
            endpoints.setdefault(s.name, _Tally()).add(s)
            overall.add(s)
            if not s.ok:
                self.error_messages[f"{s.name}: {s.error or 'failed'}"] += 1
        if end is None:
            end = max((s.start + s.latency_ms / 1000 for s in kept), default=begin)
        self._runs.append((endpoints, overall, max(end - begin, 0.0)))
        return len(kept)

    @property
    def runs(self) -> int:
        return len(self._runs)

    def endpoint_names(self) -> list[str]:
        return sorted({name for endpoints, _, _ in self._runs for name in endpoints})

    def run_figures(self, index: int, endpoint: str | None = None) -> Figures:
        """Figures of run ``index`` (0-based), overall or for one endpoint."""
        endpoints, overall, span = self._runs[index]
        tally = overall if endpoint is None else endpoints.get(endpoint, _Tally())
        return summarize(tally.latencies, tally.errors, span, _nonzero(tally.lags))

    def pooled(self, endpoint: str | None = None) -> Figures:
        """Figures over every run: all latencies together, the runs' spans added up."""
        latencies: list[float] = []
        lags: list[float] = []
        errors = 0
        span = 0.0
        for endpoints, overall, run_span in self._runs:
            tally = overall if endpoint is None else endpoints.get(endpoint, _Tally())
            latencies.extend(tally.latencies)
            lags.extend(tally.lags)
            errors += tally.errors
            span += run_span
        return summarize(latencies, errors, span, _nonzero(lags))

    def sorted_latencies(self, endpoint: str | None = None) -> list[float]:
        """Every successful latency of every run, sorted (for CDF plots)."""
        out: list[float] = []
        for endpoints, overall, _ in self._runs:
            tally = overall if endpoint is None else endpoints.get(endpoint, _Tally())
            out.extend(tally.latencies)
        out.sort()
        return out


def _nonzero(lags: list[float]) -> list[float]:
    """Lags only mean something in the open model, where some are above zero."""
    return lags if any(lags) else []


# --------------------------------------------------------------------------------------------------
# budgets


class BudgetError(ValueError):
    """A budget that does not parse; the message names the column and what was expected."""


@dataclass(frozen=True, slots=True)
class _Operand:
    number: float | None = None
    side: str | None = None
    metric: str | None = None

    @property
    def key(self) -> str | None:
        return f"{self.side}.{self.metric}" if self.side else None

    def text(self) -> str:
        return self.key or _number_text(self.number or 0.0)


@dataclass(frozen=True, slots=True)
class _Comparison:
    left: tuple[_Operand, ...]
    op: str
    right: tuple[_Operand, ...]

    def text(self) -> str:
        return f"{_product_text(self.left)} {self.op} {_product_text(self.right)}"


def _product_text(operands: Sequence[_Operand]) -> str:
    return " * ".join(o.text() for o in operands)


@dataclass(frozen=True, slots=True)
class ClauseResult:
    """One comparison of a budget, evaluated: both sides' values and the figures they used."""

    text: str
    left: float | None
    op: str
    right: float | None
    passed: bool
    figures: tuple[tuple[str, float | None], ...]

    def explain(self) -> str:
        """``b.p95 <= 0.5 * a.p95: 52.1 <= 0.62 fails (b.p95 = 52.1 ms, a.p95 = 1.24 ms)``."""
        used = ", ".join(f"{k} = {figure_text(k, v)}" for k, v in self.figures)
        verdict = "holds" if self.passed else "fails"
        if self.left is None or self.right is None:
            return f"{self.text}: cannot be judged, a figure is missing ({used})"
        lhs, rhs = _value_text(self.left), _value_text(self.right)
        return f"{self.text}: {lhs} {self.op} {rhs} {verdict} ({used})"


@dataclass(frozen=True, slots=True)
class BudgetResult:
    text: str
    passed: bool
    clauses: tuple[ClauseResult, ...]

    def failed(self) -> tuple[ClauseResult, ...]:
        return tuple(c for c in self.clauses if not c.passed)


_OPS = {
    "<=": lambda x, y: x <= y,
    "<": lambda x, y: x < y,
    ">=": lambda x, y: x >= y,
    ">": lambda x, y: x > y,
}


@dataclass(frozen=True, slots=True)
class Budget:
    """A parsed ``--expect`` expression: comparisons joined by ``and``."""

    text: str
    clauses: tuple[_Comparison, ...]

    def keys(self) -> tuple[str, ...]:
        """The figures it reads, e.g. ``("b.p95", "a.p95")``."""
        out: dict[str, None] = {}
        for c in self.clauses:
            for o in (*c.left, *c.right):
                if o.key:
                    out[o.key] = None
        return tuple(out)

    def evaluate(self, figures: Mapping[str, float | None]) -> BudgetResult:
        """Judge against ``{"a.p95": 1.2, ...}``; a missing figure fails its comparison."""
        results = []
        for c in self.clauses:
            left, right = _product(c.left, figures), _product(c.right, figures)
            passed = left is not None and right is not None and _OPS[c.op](left, right)
            used = tuple(
                (o.key, figures.get(o.key)) for o in dict.fromkeys((*c.left, *c.right)) if o.key
            )
            results.append(ClauseResult(c.text(), left, c.op, right, passed, used))
        return BudgetResult(self.text, all(r.passed for r in results), tuple(results))


def _product(operands: Sequence[_Operand], figures: Mapping[str, float | None]) -> float | None:
    value = 1.0
    for o in operands:
        if o.key is None:
            value *= o.number or 0.0
            continue
        got = figures.get(o.key)
        if got is None:
            return None
        value *= got
    return value


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]*)*)
    | (?P<op><=|>=|<|>)
    | (?P<star>\*)
    | (?P<bad>\S)
    )""",
    re.VERBOSE,
)

_HINT = f"a number or a metric: a|b followed by .{', .'.join(METRICS)}"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number | name | op | star | and | end
    text: str
    pos: int


def _tokens(text: str) -> list[_Token]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:  # only trailing whitespace is left
            break
        kind = m.lastgroup or "bad"
        value = m.group(kind)
        start = m.start(kind)
        if kind == "bad":
            hint = " (use <=, <, >= or >)" if value in "=!" else ""
            raise _error(text, start, f"unexpected {value!r}{hint}")
        if kind == "name" and value == "and":
            kind = "and"
        out.append(_Token(kind, value, start))
        pos = m.end()
    out.append(_Token("end", "", len(text)))
    return out


def _error(text: str, pos: int, message: str) -> BudgetError:
    return BudgetError(f"column {pos + 1}: {message}\n  {text}\n  {' ' * pos}^")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def budget(self) -> Budget:
        clauses = [self.comparison()]
        while self.peek().kind == "and":
            self.take()
            clauses.append(self.comparison())
        tok = self.peek()
        if tok.kind != "end":
            expected = "'and' or the end" if tok.kind != "op" else "'and' (chained comparisons)"
            hint = " (a missing '*'?)" if tok.kind in ("number", "name") else ""
            raise _error(self.text, tok.pos, f"expected {expected}, got {tok.text!r}{hint}")
        return Budget(self.text.strip(), tuple(clauses))

    def comparison(self) -> _Comparison:
        left = self.product()
        tok = self.peek()
        if tok.kind != "op":
            got = "the end" if tok.kind == "end" else repr(tok.text)
            raise _error(self.text, tok.pos, f"expected a comparison (<=, <, >=, >), got {got}")
        self.take()
        right = self.product()
        if not any(o.key for o in (*left, *right)):
            raise _error(self.text, tok.pos, "a comparison needs at least one a./b. metric")
        return _Comparison(left, tok.text, right)

    def product(self) -> tuple[_Operand, ...]:
        operands = [self.operand()]
        while self.peek().kind == "star":
            self.take()
            operands.append(self.operand())
        return tuple(operands)

    def operand(self) -> _Operand:
        tok = self.take()
        if tok.kind == "number":
            value = float(tok.text)
            if not math.isfinite(value):
                raise _error(self.text, tok.pos, f"number {tok.text!r} is out of range")
            return _Operand(number=value)
        if tok.kind == "name":
            return self.metric(tok)
        got = "the end" if tok.kind == "end" else repr(tok.text)
        raise _error(self.text, tok.pos, f"expected {_HINT}; got {got}")

    def metric(self, tok: _Token) -> _Operand:
        side, dot, metric = tok.text.partition(".")
        if side not in SIDES:
            raise _error(self.text, tok.pos, f"unknown side {side!r} in {tok.text!r}: use a or b")
        if not dot:
            raise _error(
                self.text, tok.pos, f"{tok.text!r} is not a metric: expected e.g. {side}.p95"
            )
        if metric not in METRICS:
            shown = repr(metric) if metric else "nothing"
            raise _error(
                self.text,
                tok.pos + len(side) + 1,
                f"unknown metric {shown} after '{side}.': expected one of {', '.join(METRICS)}",
            )
        return _Operand(side=side, metric=metric)


def parse_budget(text: str) -> Budget:
    """Parse one ``--expect`` expression; raises BudgetError (column and what was expected)."""
    if not isinstance(text, str) or not text.strip():
        raise BudgetError("empty budget: expected e.g. 'b.p95 <= 0.5 * a.p95'")
    return _Parser(text).budget()


def _number_text(value: float) -> str:
    return f"{value:g}"


def figure_text(key: str, value: float | None) -> str:
    """A figure with its unit: ``1.234 ms``, ``812.5 req/s``, ``0.25 %``."""
    if value is None:
        return "n/a"
    metric = key.rpartition(".")[2]
    if metric in LATENCY_METRICS:
        return f"{_value_text(value)} ms"
    if metric == "rps":
        return f"{_value_text(value)} req/s"
    if metric == "error_rate":
        return f"{_value_text(value * 100)} %"
    return _value_text(value)


def _value_text(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0 or 0.001 <= abs(value) < 1e6:
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return f"{value:.3e}"
