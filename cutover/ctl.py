"""`cutover ctl`: the operator's face of the admin API.

    cutover ctl status
    cutover ctl weights ROUTE go=99 python=1 [--reason TEXT]
    cutover ctl rollback [ROUTE] [--ramp 30s | --instant] [--reason TEXT]
    cutover ctl promote|pause|resume [ROUTE] [--reason TEXT]
    cutover ctl events [--route ROUTE] [--limit N]
    cutover ctl whoami

The admin URL comes from `--admin` (or CUTOVER_ADMIN_URL, default http://127.0.0.1:9901), the
token from `--token` (or CUTOVER_ADMIN_TOKEN; prefer the variable: a flag shows in process
lists). The audit log names the admin token's owner (`admin.tokens`); the local user name is
sent as `X-Cutover-Actor`, kept only as a self-declared note next to the shared `admin.token`.
`--json` prints the API's answer as is.
Exit status: 0 done, 1 refused or unreachable, 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_ADMIN = "http://127.0.0.1:9901"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _arguments(sub.add_parser("ctl", help="talk to a running gateway's admin API"))


def main(argv: list[str]) -> int:
    """`cutover ctl ...` without building the other commands' parsers: they import the
    parity, bench and compat modules, which an operator polling `ctl status` waits for."""
    parser = argparse.ArgumentParser(prog="cutover ctl")
    _arguments(parser)
    return run(parser.parse_args(argv))


def _arguments(ctl: argparse.ArgumentParser) -> None:
    ctl.add_argument("--admin", default=os.environ.get("CUTOVER_ADMIN_URL", DEFAULT_ADMIN))
    ctl.add_argument("--token", default=None, help="admin token (default: $CUTOVER_ADMIN_TOKEN)")
    ctl.add_argument("--json", action="store_true", help="print the raw JSON answer")
    ctl.add_argument("--timeout", type=float, default=10.0)
    cmds = ctl.add_subparsers(dest="ctl_command", required=True)
    cmds.add_parser("status", help="weights, phases and verdicts of every route")
    w = cmds.add_parser("weights", help="set a route's weights: ROUTE go=99 python=1")
    w.add_argument("route")
    w.add_argument("weights", nargs="+", metavar="BACKEND=WEIGHT")
    w.add_argument("--reason", default="")
    for name, text in (
        ("rollback", "baseline takes 100%% (all canary routes, or ROUTE)"),  # %% for argparse
        ("promote", "candidate to the next step"),
        ("pause", "stop automatic promotion"),
        ("resume", "resume automatic control (releases a rollback latch)"),
    ):
        p = cmds.add_parser(name, help=text)
        p.add_argument("route", nargs="?")
        p.add_argument("--reason", default="")
        if name == "rollback":
            g = p.add_mutually_exclusive_group()
            g.add_argument("--ramp", metavar="DURATION", help="ramp down over DURATION, e.g. 30s")
            g.add_argument("--instant", action="store_true", help="all at once")
    e = cmds.add_parser("events", help="the audit log, newest first")
    e.add_argument("--route")
    e.add_argument("--limit", type=int, default=20)
    cmds.add_parser("whoami", help="the name the admin API knows the token by")


class CtlError(Exception):
    pass


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    token = args.token or os.environ.get("CUTOVER_ADMIN_TOKEN")
    headers = {"Accept": "application/json", "X-Cutover-Actor": _who()}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    url = args.admin.rstrip("/") + path
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            err = json.loads(raw).get("error", {})
            message = err.get("message", raw.decode(errors="replace"))
            where = f" ({err['field']})" if err.get("field") else ""
        except (ValueError, AttributeError):
            message, where = raw.decode(errors="replace")[:200], ""
        raise CtlError(f"HTTP {exc.code}{where}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(f"cannot reach the admin API at {args.admin}: {reason}") from None
    try:
        return json.loads(raw or b"{}")
    except ValueError:  # something else listens there (the gateway's own port, say)
        raise CtlError(f"{url} did not answer JSON: is it the admin API?") from None


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "ctl"


def _weights(pairs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value.strip().lstrip("-").isdigit():
            raise CtlError(f"expected BACKEND=WEIGHT such as go=99, got {pair!r}")
        out[name] = int(value)
    return out


def _status(args: argparse.Namespace) -> Any:
    routes = _request(args, "GET", "/admin/routes")
    canary = _request(args, "GET", "/admin/canary")
    if args.json:
        return {"routes": routes, "canary": canary}
    verdicts = {c["route"]: c for c in canary.get("routes", [])}
    lines = []
    for r in routes["routes"]:
        weights = " ".join(f"{b}={w}" for b, w in r["weights"].items())
        phase = r.get("phase", "")
        latch = " LATCHED" if r.get("latched") else ""
        lines.append(f"{r['name']}: {weights} ({r['source']}) {phase}{latch}".rstrip())
        c = verdicts.get(r["name"])
        if c is not None:
            v = c["verdict"]
            lines.append(f"  verdict: {v['status']} - {v['reason']}")
            gate = c.get("promotion") or {}
            if gate.get("min_parity") is not None:
                state = "open" if gate.get("open") else "closed"
                lines.append(f"  promotion gate: {state} - {gate.get('reason')}")
            for side in ("baseline", "candidate"):
                s = c[side]
                rate = "n/a" if s["error_rate"] is None else f"{s['error_rate'] * 100:.3f}%"
                ms = {q: _ms(s[f"{q}_ms"]) for q in ("p50", "p95", "p99")}
                lines.append(
                    f"  {side} {s['backend']}: {s['requests']} req, {s['errors']} err ({rate}), "
                    f"p50 {ms['p50']}, p95 {ms['p95']}, p99 {ms['p99']}"
                )
    shared = routes.get("shared_state") or {}
    if shared:
        state = "connected" if shared.get("connected") else f"DOWN ({shared.get('last_error')})"
        lines.append(f"shared state: {shared.get('backend')} {state}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    """A latency for humans: ``n/a`` before the window has any (not ``None ms``)."""
    return "n/a" if value is None else f"{value} ms"


def _seconds(at: str | float) -> float:
    """An API time (RFC 3339; unix seconds from a gateway older than that convention)."""
    if isinstance(at, int | float):
        return float(at)
    return datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def _events(args: argparse.Namespace) -> Any:
    q = f"?limit={args.limit}" + (f"&route={args.route}" if args.route else "")
    data = _request(args, "GET", "/admin/events" + q)
    if args.json:
        return data
    lines = []
    for e in data["events"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_seconds(e["at"])))
        lines.append(f"{when} #{e['id']} {e['route']} {e['kind']} by {e['actor']}: {e['reason']}")
    return "\n".join(lines) or "no events"


def _whoami(args: argparse.Namespace) -> Any:
    data = _request(args, "GET", "/admin/whoami")
    if args.json:
        return data
    token = data.get("token")
    how = f"token {token!r}" if token else "no token configured"
    return f"{data.get('actor')} ({how})"


def run(args: argparse.Namespace) -> int:
    try:
        cmd = args.ctl_command
        if cmd == "status":
            out = _status(args)
        elif cmd == "events":
            out = _events(args)
        elif cmd == "whoami":
            out = _whoami(args)
        elif cmd == "weights":
            q = f"?reason={urllib.parse.quote(args.reason)}" if args.reason else ""
            out = _request(
                args, "PUT", f"/admin/routes/{args.route}/weights{q}", _weights(args.weights)
            )
        else:
            body: dict[str, Any] = {}
            if args.route:
                body["route"] = args.route
            if args.reason:
                body["reason"] = args.reason
            if cmd == "rollback" and args.ramp:
                body.update(mode="ramp", over=args.ramp)
            elif cmd == "rollback" and args.instant:
                body["mode"] = "instant"
            out = _request(args, "POST", f"/admin/{cmd}", body)
    except CtlError as exc:
        print(f"cutover ctl: {exc}", file=sys.stderr)
        return 1
    try:
        _print(args, cmd, out)
        sys.stdout.flush()
    except BrokenPipeError:  # `cutover ctl status | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print(args: argparse.Namespace, cmd: str, out: Any) -> None:
    if isinstance(out, str):
        print(out)
    elif args.json or cmd not in ("weights", "rollback", "promote", "pause", "resume"):
        print(json.dumps(out, indent=2))
    else:
        results = out.get("results", [out])
        for r in results:
            weights = " ".join(f"{b}={w}" for b, w in r["weights"].items())
            note = r.get("reason") or r.get("error", "")
            print(f"{r['route']}: {weights} {r['phase']} - {note}")
