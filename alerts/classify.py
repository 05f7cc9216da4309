"""Alert classification decisions: the rules, the LLM prompt and the LLM answer's check. Pure.

**Rules** (the default, and the fallback whenever the LLM fails, is slow, is out of budget, answers
something malformed or is not confident enough):

- severity from the `severity` label (normalised: crit/error/err/fatal/page -> critical,
  warn -> warning, information/notice/debug/low -> info, trace/none/test -> noise), else from
  `priority` (P0/P1/high/urgent -> critical, P2/medium -> warning, P3-P5/low -> info), else from the
  alertname (Down, Dead, Failed, Outage, Critical -> critical), else warning while firing and
  info once resolved;
- category from the first matching `CategoryRule` (alertname and/or label regexes, anchored), else
  `default_category`;
- confidence: 0.8 with a severity label and a category rule, 0.7 with one of them from a label,
  0.5 from the name or a category rule alone, 0.4 with nothing to go on.

**LLM**: `build_prompt` writes the messages (label and annotation values that look like secrets are
replaced by `<redacted>` and never leave the gateway) and their digest (kept for audit);
`LLM_SCHEMA` is the strict JSON schema the answer must follow; `parse_llm_answer` checks an answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cutover.alerts.model import Alert, Classification, Severity

__all__ = [
    "DEFAULT_CATEGORY_RULES",
    "DEFAULT_SECRET_PATTERNS",
    "LLM_SCHEMA",
    "SEVERITIES",
    "CategoryRule",
    "Prompt",
    "RulesConfig",
    "build_prompt",
    "classify_by_rules",
    "normalize_priority",
    "normalize_severity",
    "parse_llm_answer",
    "redact",
]

SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info", "noise")
MAX_RECOMMENDATIONS = 5
MAX_TEXT = 2000  # characters kept of the LLM's reasoning and of each recommendation

_SEVERITY_WORDS: dict[str, Severity] = {
    **dict.fromkeys(
        ("critical", "crit", "error", "err", "fatal", "emergency", "emerg", "page", "disaster",
         "high", "p1", "sev1"), "critical"),
    **dict.fromkeys(("warning", "warn", "average", "medium", "major", "minor", "sev2", "p2"),
                    "warning"),
    **dict.fromkeys(("info", "information", "informational", "inf", "notice", "debug", "low",
                     "sev3", "p3", "ok"), "info"),
    **dict.fromkeys(("noise", "trace", "none", "test", "silent", "ignore"), "noise"),
}  # fmt: skip
_PRIORITY_WORDS: dict[str, Severity] = {
    **dict.fromkeys(("p0", "p1", "0", "1", "highest", "high", "urgent", "critical"), "critical"),
    **dict.fromkeys(("p2", "2", "medium", "normal"), "warning"),
    **dict.fromkeys(("p3", "p4", "p5", "3", "4", "5", "low", "lowest"), "info"),
}
_CRITICAL_NAME = re.compile(r"down|dead|fail|outage|critical|unreachable|crash", re.IGNORECASE)


def normalize_severity(text: str) -> Severity | None:
    """A `severity` label value as one of the four classes, or None when it says nothing."""
    return _SEVERITY_WORDS.get(text.strip().lower())


def normalize_priority(text: str) -> Severity | None:
    return _PRIORITY_WORDS.get(text.strip().lower())


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """`category` when the alertname and every label condition match (regexes, anchored)."""

    category: str
    alertname: re.Pattern[str] | None = None
    labels: tuple[tuple[str, re.Pattern[str]], ...] = ()

    def matches(self, alert: Alert) -> bool:
        if self.alertname is not None and self.alertname.fullmatch(alert.name) is None:
            return False
        return all(
            pattern.fullmatch(alert.labels.get(name, "")) is not None
            for name, pattern in self.labels
        )


def _rule(category: str, alertname: str) -> CategoryRule:
    return CategoryRule(category, re.compile(alertname, re.IGNORECASE))


DEFAULT_CATEGORY_RULES: tuple[CategoryRule, ...] = (
    _rule("infrastructure", r".*(Node|Instance|Host|Kubelet|Target)(Down|Unreachable|NotReady).*"),
    _rule("security", r".*(Security|Intrusion|Unauthori[sz]ed|Breach|Vulnerab|Threat).*"),
    _rule("certificate", r".*(Cert|Certificate|TLS|SSL).*"),
    _rule("resource", r".*(CPU|Memory|Mem|Disk|Filesystem|Storage|Inode|OOM|Quota).*"),
    _rule("network", r".*(Network|Latency|Packet|DNS|Connection|Socket).*"),
    _rule("database", r".*(Postgres|MySQL|Database|Redis|Replication|DB[A-Z]).*"),
    _rule("availability", r".*(Down|Unavailable|Outage|Crash|Restart|Failed|Dead).*"),
    _rule("application", r".*(Error|Errors|5xx|Exception|Http|Request).*"),
)


@dataclass(frozen=True, slots=True)
class RulesConfig:
    categories: tuple[CategoryRule, ...] = DEFAULT_CATEGORY_RULES
    default_category: str = "general"


# The first matching rule, remembered by what the rules read: the alertname and the labels some
# rule names (every default rule scans the name with a `.*(...).*` regex: 8 scans for a name none
# matches). Per rule set (the last few: a reload makes a new one), each bounded, oldest out.
_MATCHED_MAX = 4096
_RULE_SETS_MAX = 4
_Memo = dict[tuple[str, ...], CategoryRule | None]
_matched: dict[int, tuple[RulesConfig, tuple[str, ...], _Memo]] = {}


def first_match(alert: Alert, rules: RulesConfig) -> CategoryRule | None:
    """The first of `rules.categories` that matches `alert`, or None (as trying them in order)."""
    entry = _matched.get(id(rules))
    if entry is None or entry[0] is not rules:  # (the entry holds `rules`: its id is not reused)
        if len(_matched) >= _RULE_SETS_MAX:
            del _matched[next(iter(_matched))]
        names = tuple(sorted({name for rule in rules.categories for name, _ in rule.labels}))
        entry = _matched[id(rules)] = (rules, names, {})
    _, names, memo = entry
    labels = alert.labels
    key = (labels.get("alertname", ""), *[labels.get(n, "") for n in names])
    if key in memo:
        return memo[key]
    if len(memo) >= _MATCHED_MAX:
        del memo[next(iter(memo))]
    found = memo[key] = next((r for r in rules.categories if r.matches(alert)), None)
    return found


def classify_by_rules(alert: Alert, rules: RulesConfig = RulesConfig()) -> Classification:
    """The rule-based classification of `alert` (never fails)."""
    reasons: list[str] = []
    severity: Severity | None = None
    from_label = False
    raw = alert.labels.get("severity")
    if raw is not None and (severity := normalize_severity(raw)) is not None:
        from_label = True
        reasons.append(f"severity from label severity={raw!r}")
    if severity is None:
        raw = alert.labels.get("priority")
        if raw is not None and (severity := normalize_priority(raw)) is not None:
            from_label = True
            reasons.append(f"severity from label priority={raw!r}")
    from_name = False
    if severity is None and _CRITICAL_NAME.search(alert.name):
        severity, from_name = "critical", True
        reasons.append(f"alertname {alert.name!r} names an outage")
    if severity is None:
        severity = "warning" if alert.status == "firing" else "info"
        reasons.append(f"no severity label; {alert.status} alerts default to {severity}")
    category = rules.default_category
    matched = first_match(alert, rules)
    if matched is not None:
        category = matched.category
        reasons.append(f"category {category!r} from the alert's name and labels")
    if from_label and matched is not None:
        confidence = 0.8
    elif from_label:
        confidence = 0.7
    elif from_name or matched is not None:
        confidence = 0.5
    else:
        confidence = 0.4
    recommendations: list[str] = []
    runbook = alert.annotations.get("runbook_url") or alert.annotations.get("runbook")
    if runbook:
        recommendations.append(f"Follow the runbook: {runbook}")
    if alert.status == "resolved":
        recommendations.append("Resolved: confirm recovery and note the cause.")
    return Classification(
        severity=severity,
        category=category,
        confidence=confidence,
        reasoning="; ".join(reasons),
        recommendations=tuple(recommendations),
        source="rules",
    )


# -- LLM --------------------------------------------------------------------------------------

LLM_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "severity": {"type": "string", "enum": list(SEVERITIES)},
        "category": {"type": "string"},
        "confidence": {"type": "number"},
        "reasoning": {"type": "string"},
        "recommendations": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["severity", "category", "confidence", "reasoning", "recommendations"],
    "additionalProperties": False,
}

SYSTEM_PROMPT = (
    "You are an SRE triaging Prometheus/Alertmanager alerts for a Kubernetes platform. "
    "Classify the alert. severity: critical (user-facing impact or data at risk now, page "
    "someone), "
    "warning (degradation or risk that needs attention within hours), info (worth recording, "
    "no action), noise (flapping, test or meaningless alerts). category: one short lowercase word "
    "such as infrastructure, resource, network, database, application, security, certificate, "
    "availability. confidence: 0 to 1. reasoning: one or two sentences. recommendations: up to "
    "five short concrete next steps. A resolved alert is usually info unless it reveals a problem. "
    "Values shown as <redacted> were removed on purpose. Answer with JSON only."
)

DEFAULT_SECRET_PATTERNS: tuple[str, ...] = (
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}",
    r"\bsk-[A-Za-z0-9_-]{16,}",  # OpenAI-style API keys
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+",  # JWTs
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"://[^/\s:@]+:[^/\s@]+@",  # user:password@ in URLs
    r"(?i)\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)\s*[=:]\s*\S+",
    r"\b[A-Fa-f0-9]{40,}\b",  # long hex strings (keys, hashes of secrets)
)
_SECRET_NAMES = re.compile(
    r"(?i)(password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)"
)
REDACTED = "<redacted>"


def redact(values: Mapping[str, str], patterns: Sequence[re.Pattern[str]]) -> dict[str, str]:
    """`values` with every value that matches a secret pattern (or sits under a secret-sounding
    name) replaced by `<redacted>`."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if _SECRET_NAMES.search(name) or any(p.search(value) for p in patterns):
            out[name] = REDACTED
        else:
            out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: tuple[dict[str, str], ...]
    digest: str  # sha256 of the messages as sent, for the audit trail


def build_prompt(alert: Alert, patterns: Sequence[re.Pattern[str]]) -> Prompt:
    """The chat messages for one alert; secret-looking values never appear in them."""
    labels = redact(alert.labels, patterns)
    annotations = redact(alert.annotations, patterns)
    user = json.dumps(
        {
            "alertname": labels.get("alertname", ""),
            "status": alert.status,
            "namespace": labels.get("namespace", ""),
            "severity_label": labels.get("severity", ""),
            "labels": labels,
            "annotations": annotations,
            "startsAt": alert.starts_at,
            "endsAt": alert.ends_at,
        },
        indent=1,
        sort_keys=True,
        ensure_ascii=False,
    )
    messages = (
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Classify this alert:\n" + user},
    )
    digest = hashlib.sha256(
        json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()
    return Prompt(messages, digest)


def parse_llm_answer(text: str | None, model: str) -> Classification | str:
    """The classification in an LLM answer, or why the answer is malformed."""
    if not text:
        return "empty answer"
    try:
        data = json.loads(text)
    except ValueError:
        return "answer is not JSON"
    if not isinstance(data, dict):
        return "answer is not a JSON object"
    missing = [k for k in LLM_SCHEMA["required"] if k not in data]  # type: ignore[attr-defined]
    if missing:
        return f"answer lacks {', '.join(missing)}"
    severity = data["severity"]
    if severity not in SEVERITIES:
        return "severity is not one of critical, warning, info, noise"
    category = data["category"]
    if not isinstance(category, str) or not category.strip():
        return "category is not a non-empty string"
    confidence = data["confidence"]
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not math.isfinite(confidence)
        or not 0 <= confidence <= 1
    ):
        return "confidence is not a number from 0 to 1"
    reasoning = data["reasoning"]
    if not isinstance(reasoning, str):
        return "reasoning is not a string"
    recs = data["recommendations"]
    if not isinstance(recs, list) or not all(isinstance(r, str) for r in recs):
        return "recommendations is not an array of strings"
    return Classification(
        severity=severity,
        category=category.strip().lower()[:64],
        confidence=float(confidence),
        reasoning=reasoning.strip()[:MAX_TEXT],
        recommendations=tuple(r.strip()[:MAX_TEXT] for r in recs if r.strip())[
            :MAX_RECOMMENDATIONS
        ],
        source="llm",
        model=model,
    )
