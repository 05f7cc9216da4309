"""Slack: a Block Kit message (header, fields, severity colour, runbook and source links).

Through an incoming webhook by default (`POST <webhook url>` with `{text, attachments}`).
With a bot token and a channel the message goes through the Web API instead
(`chat.postMessage`), its `ts` is remembered per fingerprint, and the resolved alert either
updates that message (`chat.update`, `resolve: update`) or replies in its thread
(`resolve: thread`). A repeated firing updates the message it already posted, so a delivery
made twice does not post twice.
"""

from __future__ import annotations

import re

from cutover.alerts.model import Alert
from cutover.publishing import view
from cutover.publishing.targets import TargetSpec
from cutover.publishing.transport import SendContext, SendOutcome, post_json

COLOURS = {
    "critical": "#FF0000",
    "error": "#E01E5A",
    "warning": "#FFA500",
    "info": "#36A64F",
    "noise": "#808080",
}
RESOLVED_COLOUR = "#2EB67D"
MAX_HEADER = 150  # plain_text in a header block
MAX_FIELD = 2000
MAX_SECTION = 3000
MAX_FIELDS = 10
# Web API errors worth another try (everything else is a configuration problem).
_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def _mrkdwn(text: str, limit: int = MAX_FIELD) -> dict[str, str]:
    return {"type": "mrkdwn", "text": view.truncate(text, limit)}


def message(alert: Alert) -> dict[str, object]:
    """`{text, attachments:[{color, blocks}]}`: blocks inside a coloured attachment."""
    sev = view.severity(alert)
    firing = alert.status == "firing"
    icon = "🔥" if firing else "✅"
    name = alert.name or "alert"
    header = view.truncate(f"{icon} {name} — {alert.status.upper()}", MAX_HEADER)
    fields = [
        _mrkdwn(f"*Status:*\n{alert.status}"),
        _mrkdwn(f"*Severity:*\n{sev}"),
    ]
    ns = view.namespace(alert)
    if ns:
        fields.append(_mrkdwn(f"*Namespace:*\n{ns}"))
    started = view.timestamp(alert.starts_at)
    if started:
        fields.append(_mrkdwn(f"*Started:*\n{started}"))
    ended = view.timestamp(alert.ends_at)
    if ended and not firing:
        fields.append(_mrkdwn(f"*Ended:*\n{ended}"))
    for label in ("instance", "job", "service"):
        if alert.labels.get(label):
            fields.append(_mrkdwn(f"*{label.capitalize()}:*\n{alert.labels[label]}"))
    c = alert.classification
    if c is not None:
        fields.append(
            _mrkdwn(
                f"*Classification:*\n{c.severity} / {c.category} ({round(c.confidence * 100)}%, "
                f"by {view.classification_source(alert)})"
            )
        )
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "fields": fields[:MAX_FIELDS]},
    ]
    text = view.description(alert)
    if text:
        blocks.append({"type": "section", "text": _mrkdwn(text, MAX_SECTION)})
    if c is not None and (c.reasoning or c.recommendations):
        lines = []
        if c.reasoning:
            lines.append(f"*Reasoning:* {view.truncate(c.reasoning, 300)}")
        for rec in c.recommendations[:3]:
            lines.append(f"• {rec}")
        blocks.append({"type": "section", "text": _mrkdwn("\n".join(lines), MAX_SECTION)})
    buttons = []
    runbook = view.runbook_url(alert)
    if runbook:
        buttons.append(_button("Runbook", runbook, "runbook"))
    if alert.generator_url:
        buttons.append(_button("Source", alert.generator_url, "source"))
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    blocks.append({"type": "context", "elements": [_mrkdwn(f"Fingerprint: `{alert.fingerprint}`")]})
    colour = COLOURS.get(sev, COLOURS["warning"]) if firing else RESOLVED_COLOUR
    fallback = f"{icon} [{alert.status.upper()}] {name}" + (f" — {text}" if text else "")
    return {
        "text": view.truncate(fallback, MAX_SECTION),
        "attachments": [{"color": colour, "blocks": blocks}],
    }


def _button(label: str, url: str, action: str) -> dict[str, object]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "url": url[:3000],
        "action_id": action,
    }


# -- sending -----------------------------------------------------------------------------------


_TS = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}")  # Slack's message timestamp, "1700000000.123456"
_CHANNEL = re.compile(r"[A-Za-z0-9#@._-]{1,100}")  # an id like C0123 or a name like #alerts
_BAD_REF = "no usable ts/channel in the answer (expected a ts like 1700000000.123456)"


async def send(ctx: SendContext, target: TargetSpec, alert: Alert) -> SendOutcome:
    body = message(alert)
    if not (target.bot_token and target.channel):
        return await post_json(
            ctx, target.url, body, headers=dict(target.headers), timeout=target.timeout
        )
    ref = await ctx.get_ref(alert.fingerprint)  # "channel|ts|firing" or "...|resolved"
    channel, ts, state = [*ref.split("|"), "", "", ""][:3] if ref else ("", "", "")
    if alert.status == "firing":
        if ts and state == "firing":
            return await _api(ctx, target, "chat.update", {"channel": channel, "ts": ts, **body})
        out = await _api(ctx, target, "chat.postMessage", {"channel": target.channel, **body})
        if out.ok and isinstance(out.data, dict) and out.data.get("ts"):
            posted_in = str(out.data.get("channel") or target.channel)
            ts = str(out.data["ts"])
            if not (_TS.fullmatch(ts) and _CHANNEL.fullmatch(posted_in)):
                # Posted, but not a ts/channel that can be kept and used again: a retry would
                # post it twice, so the job ends here with the reason.
                return SendOutcome(False, out.status, retry=False, error=_BAD_REF)
            await ctx.put_ref(alert.fingerprint, f"{posted_in}|{ts}|firing")
        return out
    if not ts:  # never posted through the bot: post the resolution on its own
        return await _api(ctx, target, "chat.postMessage", {"channel": target.channel, **body})
    if state == "resolved":
        return SendOutcome.done(200, "already resolved")
    if target.resolve == "thread":
        payload = {"channel": channel, "thread_ts": ts, **body}
        out = await _api(ctx, target, "chat.postMessage", payload)
    else:
        out = await _api(ctx, target, "chat.update", {"channel": channel, "ts": ts, **body})
    if out.ok:
        await ctx.put_ref(alert.fingerprint, f"{channel}|{ts}|resolved")
    return out


async def _api(ctx: SendContext, target: TargetSpec, method: str, body: object) -> SendOutcome:
    """A Web API call: HTTP 200 with `{"ok": false, "error"}` is a failure too."""
    out = await post_json(
        ctx,
        f"{target.api_url.rstrip('/')}/{method}",
        body,
        headers={**dict(target.headers), "Authorization": f"Bearer {target.bot_token}"},
        timeout=target.timeout,
        content_type="application/json; charset=utf-8",
    )
    if not out.ok:
        return out
    data = out.data if isinstance(out.data, dict) else {}
    if data.get("ok") is True:
        return out
    error = str(data.get("error") or "no 'ok' in the answer")
    return SendOutcome(
        False,
        out.status,
        retry=error in _TRANSIENT,
        error=f"slack {method}: {error}",
        body=out.body,
    )
