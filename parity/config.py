"""The `parity:` config section: comparison rules, noise thresholds, shadow-traffic limits.

    parity:
      ignore: ["$..request_id", "header.date"]
      tolerances:
        - {path: "$..duration_ms", numeric: 0.5}
        - {path: "$..timestamp", timestamp: 2s}
      array_keys: {"$.alerts": fingerprint}
      unordered: ["$.tags"]
      headers: [content-type]
      thresholds: {relative: 20, absolute: 0.03}
      endpoints: ["/silences/{name}/expire"]
      mirror: {queue: 1000, workers: 4, timeout: 10s, max_body: 1MiB, noise: true, shed_lag: 5ms,
               shed_wait: 20%, process: true, cpu: off}
      window: 1000
      min_samples: 20

`cutover parity run --config FILE` and the pytest plugin read the same section from a YAML
file (either a whole cutover config or just the section's mapping) with `load_parity_file`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import yaml

from cutover.core import configkit as kit
from cutover.core.config_model import DEFAULT_CAPTURE_REDACT, Capture
from cutover.core.configkit import ConfigError, ConfigErrors
from cutover.parity.diff import DiffRules, PathPattern, Tolerance, compile_pattern
from cutover.parity.noise import Thresholds

__all__ = ["MirrorSettings", "ParityConfig", "load_parity_file", "parse_capture", "parse_parity"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MirrorSettings:
    """How shadow traffic is sent and compared (shared by every route's `mirror:`)."""

    queue: int = 1000  # mirror jobs waiting; a full queue drops (and counts) new ones
    workers: int = 4  # mirror requests in flight per gateway worker
    timeout: float = 10.0  # one mirror request (and its noise request)
    max_body: int = 1 * MiB  # largest response body captured for comparison, per side
    noise: bool = True  # ask the primary again (safe methods only) to learn its noise
    shed_lag: float = 0.005  # event-loop lag above which mirror work is shed; 0 = never
    shed_wait: float = 0.2  # share of time the loop waits for a CPU above which it is shed
    process: bool = True  # mirror work in a child process at lower CPU priority (else inline)
    cpu: float = 0.0  # share of one CPU the mirror process may spend (0 = what it gets)


@dataclass(frozen=True, slots=True)
class ParityConfig:
    rules: DiffRules = field(default_factory=DiffRules)
    thresholds: Thresholds = field(default_factory=Thresholds)
    endpoints: tuple[str, ...] = ()  # endpoint templates such as /silences/{name}/expire
    mirror: MirrorSettings = field(default_factory=MirrorSettings)
    window: int = 1000  # latest mirrored comparisons per route behind the parity rate
    min_samples: int = 20  # parity_rate() is None below this many comparisons


_KEYS = (
    "ignore",
    "tolerances",
    "array_keys",
    "unordered",
    "headers",
    "thresholds",
    "endpoints",
    "mirror",
    "window",
    "min_samples",
)


def _pattern(ctx: kit.Ctx, value: object, path: str) -> PathPattern:
    if not isinstance(value, str):
        ctx.fail(path, "a path such as $.items[*].id, header.date, status or body", value)
    try:
        return compile_pattern(value)
    except ValueError as exc:
        ctx.fail(path, str(exc))


def _patterns(ctx: kit.Ctx, value: object, path: str) -> tuple[PathPattern, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of paths such as [$..request_id, header.date]", value)
    return tuple(kit.items(ctx, value, path, _pattern))


def _tolerance(ctx: kit.Ctx, value: object, path: str) -> Tolerance:
    m = kit.section(ctx, value, path, ("path", "numeric", "timestamp"))
    ok = kit.require(ctx, m, "path", path, "a path such as $..duration")
    pattern = kit.field(ctx, m, "path", path, _pattern, None)
    numeric = kit.field(ctx, m, "numeric", path, kit.number(0, 1e300), None)
    skew = kit.field(ctx, m, "timestamp", path, kit.duration(zero=True), None)
    if ("numeric" in m) == ("timestamp" in m):
        ctx.add(path, "exactly one of numeric (an epsilon) or timestamp (a duration)")
        raise kit.Invalid
    if not ok or pattern is None or (numeric is None and skew is None):
        raise kit.Invalid
    return Tolerance(pattern=pattern, numeric=numeric, timestamp=skew)


def _tolerances(ctx: kit.Ctx, value: object, path: str) -> tuple[Tolerance, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of {path, numeric | timestamp}", value)
    return tuple(kit.items(ctx, value, path, _tolerance))


def _array_keys(ctx: kit.Ctx, value: object, path: str) -> tuple[tuple[PathPattern, str], ...]:
    if not isinstance(value, dict):
        ctx.fail(
            path, "a mapping of array path to item key, such as {$.alerts: fingerprint}", value
        )
    out = []
    bad = False
    for key, item in value.items():
        kpath = kit.join(path, key)
        try:
            pattern = _pattern(ctx, key, kpath)
            name = kit.string(ctx, item, kpath, "an item key name (a string)")
        except kit.Invalid:
            bad = True
            continue
        out.append((pattern, name))
    if bad:
        raise kit.Invalid
    return tuple(out)


def _header_names(ctx: kit.Ctx, value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of header names such as [content-type]", value)
    return tuple(n.lower() for n in kit.items(ctx, value, path, kit.header_name))


def _thresholds(ctx: kit.Ctx, value: object, path: str) -> Thresholds:
    m = kit.section(ctx, value, path, ("relative", "absolute"))
    d = Thresholds()
    return Thresholds(
        relative=kit.field(ctx, m, "relative", path, kit.number(0, 100), d.relative),
        absolute=kit.field(ctx, m, "absolute", path, kit.number(0, 100), d.absolute),
    )


def _template(ctx: kit.Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "?" in value:
        ctx.fail(path, "a path template starting with '/', such as /alerts/{id}", value)
    return str(value)


def _templates(ctx: kit.Ctx, value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of path templates such as [/alerts/{id}]", value)
    return tuple(kit.items(ctx, value, path, _template))


def _mirror(ctx: kit.Ctx, value: object, path: str) -> MirrorSettings:
    keys = (
        "queue", "workers", "timeout", "max_body", "noise", "shed_lag", "shed_wait", "process",
        "cpu",
    )  # fmt: skip
    m = kit.section(ctx, value, path, keys)
    d = MirrorSettings()
    return MirrorSettings(
        queue=kit.field(ctx, m, "queue", path, kit.integer(1, 1_000_000), d.queue),
        workers=kit.field(ctx, m, "workers", path, kit.integer(1, 256), d.workers),
        timeout=kit.field(ctx, m, "timeout", path, kit.duration(), d.timeout),
        max_body=kit.field(ctx, m, "max_body", path, kit.size(), d.max_body),
        noise=kit.field(ctx, m, "noise", path, kit.boolean, d.noise),
        shed_lag=kit.field(ctx, m, "shed_lag", path, _shed_lag, d.shed_lag),
        shed_wait=kit.field(ctx, m, "shed_wait", path, _shed_wait, d.shed_wait),
        process=kit.field(ctx, m, "process", path, kit.boolean, d.process),
        cpu=kit.field(ctx, m, "cpu", path, _cpu, d.cpu),
    )


def _cpu(ctx: kit.Ctx, value: object, path: str) -> float:
    """A percentage of one CPU from 1 to 100 (e.g. 10%), or off (0): unbounded. (Less than 1 %
    would go to the mirror process's own waking, store reads and frames.)"""
    if kit.is_off(value):
        return 0.0
    share = _percentage(value)
    if share is None or not 0.01 <= share <= 1:
        ctx.fail(path, "a percentage of one CPU from 1 to 100 (e.g. 10%), or off", value)
    return share


def _percentage(value: object) -> float | None:
    """`20%` or `20` as 0.2; None when it is no number."""
    if isinstance(value, bool):
        return None
    text = value.strip().removesuffix("%") if isinstance(value, str) else value
    try:
        percent = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return percent / 100.0 if percent == percent else None  # (NaN is no number)


def _shed_wait(ctx: kit.Ctx, value: object, path: str) -> float:
    """A percentage such as 20% (or 20), or off (0): the run-queue wait never sheds."""
    if kit.is_off(value):
        return 0.0
    share = _percentage(value)
    if share is None or not 0 <= share <= 1:
        ctx.fail(path, "a percentage from 0 to 100 (e.g. 20%), or off", value)
    return share


def _shed_lag(ctx: kit.Ctx, value: object, path: str) -> float:
    """A duration such as 5ms, or off (0): mirror work is never shed."""
    if kit.is_off(value):
        return 0.0
    seconds = kit.seconds_of(value)
    if seconds is None or not 0 <= seconds <= 10:
        ctx.fail(path, "a duration from 0 to 10s (e.g. 5ms), or off", value)
    return seconds


_COUNT = kit.integer(1, 1_000_000)


def parse_parity(ctx: kit.Ctx, value: object, path: str) -> ParityConfig:
    """The `parity:` section (null = all defaults)."""
    m = kit.section(ctx, value, path, _KEYS)
    d = ParityConfig()
    rules = DiffRules(
        ignore=kit.field(ctx, m, "ignore", path, _patterns, ()),
        tolerances=kit.field(ctx, m, "tolerances", path, _tolerances, ()),
        array_keys=kit.field(ctx, m, "array_keys", path, _array_keys, ()),
        unordered=kit.field(ctx, m, "unordered", path, _patterns, ()),
        headers=kit.field(ctx, m, "headers", path, _header_names, d.rules.headers),
    )
    return ParityConfig(
        rules=rules,
        thresholds=kit.field(ctx, m, "thresholds", path, _thresholds, d.thresholds),
        endpoints=kit.field(ctx, m, "endpoints", path, _templates, ()),
        mirror=kit.field(ctx, m, "mirror", path, _mirror, d.mirror),
        window=kit.field(ctx, m, "window", path, _COUNT, d.window),
        min_samples=kit.field(
            ctx, m, "min_samples", path, kit.integer(1, 1_000_000), d.min_samples
        ),
    )


def _capture_file(ctx: kit.Ctx, value: object, path: str) -> str:
    text = kit.string(ctx, value, path, "a file path for the JSONL corpus")
    resolved = os.path.abspath(os.path.join(ctx.base_dir, os.path.expanduser(text)))
    if not os.path.isdir(os.path.dirname(resolved)):
        ctx.fail(path, "a file in an existing folder", resolved)
    return resolved


def parse_capture(ctx: kit.Ctx, value: object, path: str) -> Capture:
    """A route's `capture: {file, percent, redact_headers, redact_fields, max_body}`."""
    if isinstance(value, str):
        value = {"file": value}
    keys = ("file", "percent", "redact_headers", "redact_fields", "max_body")
    m = kit.section(ctx, value, path, keys)
    ok = kit.require(ctx, m, "file", path, "a file path for the JSONL corpus")
    file = kit.field(ctx, m, "file", path, _capture_file, None)
    extra = kit.field(ctx, m, "redact_headers", path, _header_names, ())
    fields = kit.field(ctx, m, "redact_fields", path, _patterns, ())
    d = Capture(file="")
    capture = Capture(
        file=file or "",
        percent=kit.field(ctx, m, "percent", path, kit.number(0, 100, lo_open=True), d.percent),
        redact_headers=DEFAULT_CAPTURE_REDACT | frozenset(extra),
        redact_fields=tuple(p.text for p in fields),
        max_body=kit.field(ctx, m, "max_body", path, kit.size(zero=True), d.max_body),
    )
    if not ok or file is None:
        raise kit.Invalid
    return capture


def load_parity_file(path: str | os.PathLike[str]) -> ParityConfig:
    """The `parity:` section of a YAML file (a cutover config, or the section alone).

    Raises `ConfigErrors` naming the file and key path of every problem.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigErrors([ConfigError(source, "", f"a readable UTF-8 file ({reason})")]) from None
    loader = kit.Loader(text)
    try:
        data = loader.load()
    except yaml.YAMLError as exc:
        raise ConfigErrors([kit.yaml_error(source, text, exc)]) from None
    finally:
        loader.dispose()
    prefix = ""
    if isinstance(data, dict) and "parity" in data:
        data, prefix = data["parity"], "parity"
    elif isinstance(data, dict) and ("routes" in data or "backends" in data):
        return ParityConfig()  # a cutover config without a parity section: the defaults
    ctx = kit.Ctx(source, os.path.dirname(os.path.abspath(source)))
    data = kit.interpolate(ctx, data, prefix, os.environ)  # as the gateway reads the file
    try:
        config = parse_parity(ctx, data, prefix)
    except kit.Invalid:
        config = None
    if ctx.errors or config is None:
        raise ConfigErrors(ctx.errors)
    return config
