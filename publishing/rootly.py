"""Rootly (JSON:API, `application/vnd.api+json`, `Authorization: Bearer <token>`).

`kind: alert` (default): firing -> `POST /v1/alerts` with `deduplication_key` = fingerprint;
resolved -> `POST /v1/alerts/{id}/resolve`.
`kind: incident`: firing -> `POST /v1/incidents`; resolved -> `PUT /v1/incidents/{id}/resolve`.

The id Rootly returns is remembered per fingerprint in the durable store. A firing alert that
already has an id is not created again; a resolved one without an id has nothing to resolve
(done); 404/409 on resolve mean it is already gone (done).
"""

from __future__ import annotations

import re

from cutover.alerts.model import Alert
from cutover.publishing import view
from cutover.publishing.targets import TargetSpec
from cutover.publishing.transport import SendContext, SendOutcome, post_json

CONTENT_TYPE = "application/vnd.api+json"
MAX_TITLE = 255
MAX_DESCRIPTION = 10_000
# Classification severity -> Rootly's wording (spec digest §6.3).
SEVERITY = {
    "critical": "critical",
    "error": "major",
    "warning": "major",
    "info": "minor",
    "noise": "low",
}


def title(alert: Alert) -> str:
    ns = view.namespace(alert) or "unknown"
    text = f"[{alert.name or 'alert'}] Alert in {ns}"
    note = view.classification_note(alert)
    return view.truncate(f"{text} ({note})" if note else text, MAX_TITLE)


def description(alert: Alert) -> str:
    lines = [
        f"**Alert:** {alert.name}",
        f"**Status:** {alert.status}",
        f"**Namespace:** {view.namespace(alert) or 'unknown'}",
    ]
    if view.timestamp(alert.starts_at):
        lines.append(f"**Started:** {alert.starts_at}")
    text = view.description(alert)
    if text:
        lines += ["", text]
    c = alert.classification
    if c is not None:
        lines += [
            "",
            "**Classification**",
            f"- severity: {c.severity}",
            f"- category: {c.category}",
            f"- confidence: {round(c.confidence * 100)}%",
            f"- classified by: {view.classification_source(alert)}",
        ]
        if c.reasoning:
            lines.append(f"- reasoning: {c.reasoning}")
        for rec in c.recommendations[:5]:
            lines.append(f"- recommendation: {rec}")
    runbook = view.runbook_url(alert)
    if runbook:
        lines += ["", f"Runbook: {runbook}"]
    lines += ["", "**Labels**"] + [f"- {k}: {v}" for k, v in sorted(alert.labels.items())]
    return view.truncate("\n".join(lines), MAX_DESCRIPTION)


def alert_body(alert: Alert) -> dict[str, object]:
    sev = view.severity(alert)
    attributes: dict[str, object] = {
        "source": "alertmanager",
        "summary": title(alert),
        "description": description(alert),
        "status": "triggered",
        "noise": "noise" if sev == "noise" else "not_noise",
        "external_id": alert.fingerprint,
        "deduplication_key": alert.fingerprint,
        "labels": [{"key": k, "value": v} for k, v in sorted(alert.labels.items())],
        "data": {
            "annotations": dict(alert.annotations),
            "severity": SEVERITY.get(sev, "major"),
            "classification": alert.classification.as_dict() if alert.classification else None,
        },
    }
    if view.timestamp(alert.starts_at):
        attributes["started_at"] = alert.starts_at
    if alert.generator_url:
        attributes["external_url"] = alert.generator_url
    return {"data": {"type": "alerts", "attributes": attributes}}


def incident_body(alert: Alert) -> dict[str, object]:
    attributes: dict[str, object] = {
        "title": title(alert),
        "summary": description(alert),
        "kind": "normal",
        "labels": {
            "alertname": alert.name,
            "fingerprint": alert.fingerprint,
            "severity": SEVERITY.get(view.severity(alert), "major"),
        },
    }
    if view.timestamp(alert.starts_at):
        attributes["started_at"] = alert.starts_at
    return {"data": {"type": "incidents", "attributes": attributes}}


def resolve_body(alert: Alert, kind: str) -> dict[str, object]:
    ns = view.namespace(alert) or "unknown"
    attributes: dict[str, object] = {
        "resolution_message": f"Alert resolved: {alert.name} in {ns}",
    }
    if kind == "alert":
        attributes["resolve_related_incidents"] = False
    return {"data": {"type": f"{kind}s", "attributes": attributes}}


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")  # a UUID, a number, a slug
_BAD_ID = "no usable data.id in the answer (expected up to 200 letters, digits, '.', '_', ':', '-')"


async def send(ctx: SendContext, target: TargetSpec, alert: Alert) -> SendOutcome:
    base = target.url.rstrip("/")
    kind = target.kind
    collection = f"{base}/v1/{kind}s"
    headers = {
        **dict(target.headers),
        "Authorization": f"Bearer {target.token or ''}",
        "Accept": CONTENT_TYPE,
    }
    known = await ctx.get_ref(alert.fingerprint)
    if alert.status == "firing":
        if known:
            return SendOutcome.done(None, f"already created as {known}")
        body = alert_body(alert) if kind == "alert" else incident_body(alert)
        out = await post_json(
            ctx,
            collection,
            body,
            headers=headers,
            timeout=target.timeout,
            content_type=CONTENT_TYPE,
        )
        if out.ok:
            data = out.data.get("data") if isinstance(out.data, dict) else None
            new_id = data.get("id") if isinstance(data, dict) else None
            if (
                isinstance(new_id, bool)
                or not isinstance(new_id, str | int)
                or not _ID.fullmatch(str(new_id))
            ):
                # Created, but an id that cannot be stored or put in a URL path: a retry would
                # create it again, so the job ends here with the reason.
                return SendOutcome(False, out.status, retry=False, error=_BAD_ID)
            await ctx.put_ref(alert.fingerprint, str(new_id))
        return out
    if not known:
        return SendOutcome.done(None, "nothing to resolve (never created)")
    out = await post_json(
        ctx,
        f"{collection}/{known}/resolve",
        resolve_body(alert, kind),
        headers=headers,
        timeout=target.timeout,
        method="POST" if kind == "alert" else "PUT",
        content_type=CONTENT_TYPE,
    )
    if out.ok or out.status in (404, 409):
        await ctx.drop_ref(alert.fingerprint)
        return SendOutcome.done(out.status, "" if out.ok else "already resolved or gone")
    return out
