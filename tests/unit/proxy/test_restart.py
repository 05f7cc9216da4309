"""proxy.restart: what a reload leaves for the next restart, decided from two configs."""

from __future__ import annotations

from typing import Any

from cutover.app import FEATURES
from cutover.proxy.config import CutoverConfig, parse_config
from cutover.proxy.restart import restart_required

BASE: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "backends": {"go": {"url": "http://127.0.0.1:9001"}},
    "routes": [{"name": "default", "match": {"path_prefix": "/"}, "split": {"go": 100}}],
}


def cfg(**changes: Any) -> CutoverConfig:
    return parse_config({**BASE, **changes}, "test.yaml")


def wanted(started: CutoverConfig, new: CutoverConfig) -> dict[str, tuple[bool, bool]]:
    """Each feature: (running, as the gateway started with `started`; wanted by `new`)."""
    return {c.name: (c.wanted(started), c.wanted(new)) for c in FEATURES}


def required(started: CutoverConfig, new: CutoverConfig) -> list[str]:
    return restart_required(started, new, wanted(started, new))


def test_what_a_reload_applies_needs_no_restart() -> None:
    started = cfg()
    new = cfg(
        backends={"go": {"url": "http://127.0.0.1:9002"}, "py": {"url": "http://127.0.0.1:9003"}},
        routes=[{"name": "default", "match": {"path_prefix": "/"}, "split": {"go": 10, "py": 90}}],
        limits={"max_body": "2MiB", "max_concurrency": 50},
        fast_path=False,
    )
    assert required(started, new) == []
    assert required(started, started) == []


def test_sockets_processes_files_and_connections_are_named_without_values() -> None:
    started = cfg(storage="postgresql://u:secret@127.0.0.1:5432/a", redis="redis://127.0.0.1/0")
    new = cfg(
        listen="127.0.0.1:9090",
        admin={"listen": "127.0.0.1:9999"},
        workers=4,
        access_log={"enabled": True, "path": "/tmp/other.log"},
        storage="postgresql://u:other-secret@127.0.0.1:5432/b",
        redis="redis://:pw@127.0.0.1/1",
        limits={"max_headers": 50, "header_timeout": "5s"},
    )
    lines = required(started, new)
    assert [line.split(":")[0] for line in lines] == [
        "listen",
        "admin.listen",
        "workers",
        "access_log",
        "storage",
        "redis",
        "limits.max_headers, limits.header_timeout",
    ]
    text = "\n".join(lines)
    assert "secret" not in text and "pw@" not in text and "9090" not in text


def test_features_start_and_stop_only_with_the_gateway() -> None:
    started = cfg(admin="off")
    with_alerts = cfg(admin="off", alerts={"paths": ["/webhook/proxy"]})
    assert required(started, with_alerts) == [
        "alerts: the feature starts with the gateway",
        "publishing: the feature starts with the gateway",
    ]
    assert required(with_alerts, started) == [
        "alerts: the feature keeps running until a restart",
        "publishing: the feature keeps running until a restart",
    ]
    # compat and parity follow their sections at reload: nothing to wait for
    assert required(started, cfg(admin="off", compat={"rules": []})) == []


def test_alerts_paths_are_registered_at_start() -> None:
    one = cfg(alerts={"paths": ["/webhook/proxy"]})
    two = cfg(alerts={"paths": ["/webhook/proxy", "/webhook/other"]})
    assert required(one, two) == ["alerts.paths: intake endpoints are registered at start"]
    assert required(one, cfg(alerts={"paths": ["/webhook/proxy"], "dedup_window": "10m"})) == []


def test_turning_the_fast_path_on_waits_but_turning_it_off_does_not() -> None:
    off, on = cfg(fast_path=False), cfg(fast_path=True)
    assert required(on, off) == []
    assert required(off, on) == [
        "fast_path: the fast listener is set up at start (turning it off applies now)"
    ]
