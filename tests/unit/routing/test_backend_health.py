"""routing.health: active thresholds, passive ejection, expiry, max_ejection_percent."""

from __future__ import annotations

import math

import pytest

from cutover.core.config_model import Backend, HealthCheck, OutlierDetection
from cutover.routing.health import BackendHealth, HealthTable

CHECK = HealthCheck(healthy_threshold=2, unhealthy_threshold=3)
OUTLIER = OutlierDetection(consecutive_failures=5, base_ejection=30.0, max_ejection=100.0)


def backend(name: str, outlier: OutlierDetection = OUTLIER, health=CHECK) -> Backend:
    return Backend(
        name=name,
        url=f"http://{name}:8080",
        scheme="http",
        host=name,
        port=8080,
        base_path="",
        health=health,
        outlier=outlier,
    )


def fail(target, n: int, now: float, name: str | None = None) -> list[str | None]:
    if name is None:
        return [target.record_response(False, now) for _ in range(n)]
    return [target.record_response(name, False, now) for _ in range(n)]


def test_active_check_thresholds() -> None:
    h = BackendHealth("go", CHECK, OUTLIER)
    assert h.state(0) == "healthy" and h.available(0)
    assert [h.record_check(False, t) for t in (1, 2)] == [None, None]
    assert h.record_check(True, 3) is None  # resets the failure streak
    assert [h.record_check(False, t) for t in (4, 5, 6)] == [None, None, "unhealthy"]
    assert h.state(6) == "unhealthy" and not h.available(6)
    assert h.record_check(False, 7) is None  # no repeated transition
    assert h.record_check(True, 8) is None
    assert h.record_check(False, 9) is None  # resets the success streak
    assert [h.record_check(True, t) for t in (10, 11)] == [None, "healthy"]
    assert h.available(11)
    assert h.record_check(True, 12) is None


def test_no_active_check_uses_default_thresholds() -> None:
    h = BackendHealth("go", None, OUTLIER)
    assert [h.record_check(False, t) for t in range(3)] == [None, None, "unhealthy"]


def test_passive_ejection_and_success_reset() -> None:
    h = BackendHealth("go", CHECK, OUTLIER)
    assert fail(h, 4, 0.0) == [None] * 4
    assert h.record_response(True, 0.0) is None  # a success resets the count
    assert fail(h, 4, 0.0) == [None] * 4
    assert h.record_response(False, 1.0) == "ejected"
    assert h.ejections == 1 and h.ejected_until == 31.0
    assert h.state(30.9) == "ejected" and not h.available(30.9)
    assert h.state(31.0) == "healthy" and h.available(31.0)


def test_failures_while_ejected_do_not_extend() -> None:
    h = BackendHealth("go", CHECK, OUTLIER)
    fail(h, 5, 0.0)
    assert fail(h, 20, 10.0) == [None] * 20
    assert h.ejected_until == 30.0 and h.ejections == 1


def test_ejection_grows_and_is_capped() -> None:
    h = BackendHealth("go", CHECK, OUTLIER)
    now = 0.0
    durations = []
    for _ in range(5):
        assert fail(h, 5, now)[-1] == "ejected"
        durations.append(h.ejected_until - now)
        now = h.ejected_until
    assert durations == [30.0, 60.0, 90.0, 100.0, 100.0]
    assert h.ejections == 5


def test_unhealthy_takes_precedence_in_state() -> None:
    h = BackendHealth("go", HealthCheck(unhealthy_threshold=1), OUTLIER)
    fail(h, 5, 0.0)
    h.record_check(False, 0.0)
    assert h.state(1.0) == "unhealthy"
    h.record_check(True, 2.0)
    h.record_check(True, 2.0)
    assert h.state(2.0) == "ejected"
    assert h.state(30.0) == "healthy"


def test_table_available_cache_and_expiry() -> None:
    t = HealthTable({"go": backend("go"), "python": backend("python"), "legacy": backend("legacy")})
    first = t.available(0.0)
    assert first == {"go", "python", "legacy"}
    assert t.available(1.0) is first  # cached, not rebuilt
    assert fail(t, 5, 10.0, "go")[-1] == "ejected"
    assert t.available(10.0) == {"python", "legacy"}
    assert t._next_expiry == 40.0
    assert t.available(39.99) == {"python", "legacy"}
    assert t.available(40.0) == {"go", "python", "legacy"}  # expiry noticed without an event
    assert t._next_expiry == math.inf
    events = [t.record_check("legacy", False, now) for now in (41.0, 42.0, 43.0)]
    assert events == [None, None, "unhealthy"]
    assert t.available(43.0) == {"go", "python"}
    t.record_check("legacy", True, 44.0)
    assert t.record_check("legacy", True, 45.0) == "healthy"
    assert t.available(45.0) == {"go", "python", "legacy"}


def test_table_earliest_expiry_wins() -> None:
    t = HealthTable({n: backend(n, OutlierDetection(max_ejection_percent=100)) for n in "abc"})
    fail(t, 5, 0.0, "a")  # until 30
    fail(t, 5, 10.0, "b")  # until 40
    assert t.available(10.0) == {"c"}
    assert t.available(30.0) == {"a", "c"}
    assert t.available(40.0) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("count", "percent", "expected_ejected"),
    [(2, 50, 1), (4, 50, 2), (4, 10, 1), (3, 50, 1), (3, 67, 2), (5, 100, 5), (1, 0, 1)],
)
def test_max_ejection_percent(count: int, percent: int, expected_ejected: int) -> None:
    outlier = OutlierDetection(max_ejection_percent=percent)
    names = [f"b{i}" for i in range(count)]
    t = HealthTable({n: backend(n, outlier) for n in names})
    events = [fail(t, 5, 1.0, n)[-1] for n in names]
    assert events.count("ejected") == expected_ejected
    assert len(t.available(1.0)) == count - expected_ejected
    refused = [n for n, e in zip(names, events, strict=True) if e is None]
    assert all(t.refused[n] == 1 for n in refused)


def test_refused_ejection_is_retried_once_room_frees() -> None:
    t = HealthTable({"go": backend("go"), "python": backend("python")})
    assert fail(t, 5, 0.0, "go")[-1] == "ejected"
    assert fail(t, 5, 0.0, "python") == [None] * 5  # 50%: refused
    assert t.refused["python"] == 1
    assert t.available(0.0) == {"python"}
    # go's ejection expires; python's next failure ejects it at once
    assert t.record_response("python", False, 30.0) == "ejected"
    assert t.available(30.0) == {"go"}


def test_groups_limit_per_route() -> None:
    backends = {n: backend(n) for n in ("go", "python", "a", "b")}
    t = HealthTable(backends, groups={"alerts": ("go", "python"), "other": ("a", "b")})
    assert fail(t, 5, 0.0, "go")[-1] == "ejected"
    assert fail(t, 5, 0.0, "a")[-1] == "ejected"  # another route's backends: allowed
    assert fail(t, 5, 0.0, "python")[-1] is None  # would eject all of route "alerts"


def test_snapshot() -> None:
    t = HealthTable({"go": backend("go"), "python": backend("python", health=None)})
    fail(t, 5, 0.0, "go")
    fail(t, 2, 0.0, "python")
    wall = 1_767_225_600.0  # 2026-01-01T00:00:00Z, at monotonic 5.0
    snap = t.snapshot(5.0, wall)
    assert snap["go"] == {
        "state": "ejected",
        "available": False,
        "healthy": True,
        "ejected": True,
        "ejected_until": "2026-01-01T00:00:25.000Z",  # wall time, not the monotonic 30.0
        "ejection_seconds_left": 25.0,
        "ejections": 1,
        "ejection_multiplier": 1,
        "ejections_refused": 0,
        "consecutive_failures": 0,
    }
    assert snap["python"]["state"] == "healthy"
    assert snap["python"]["consecutive_failures"] == 2
    after = t.snapshot(31.0, wall + 26.0)["go"]
    assert after["ejected_until"] is None and after["ejection_seconds_left"] is None
    assert after["ejection_multiplier"] == 1  # decays only after a full decay_interval
    assert t.snapshot(40.0, wall + 35.0)["go"]["ejection_multiplier"] == 0
    assert "go" in t and t["go"].ejections == 1


# --- the multiplier decays while the backend is available (Envoy's outlier detection) -------


def eject(h: BackendHealth, now: float) -> float:
    """Eject `h` at `now` by consecutive failures; the ejection's duration."""
    assert fail(h, 5, now)[-1] == "ejected"
    return h.ejected_until - now


def test_a_backend_back_for_good_is_ejected_for_base_again() -> None:
    """The reported case: four ejections in a row, then healthy for ten minutes. The next
    ejection must not last 5 x 30 s for the life of the process (the defaults decay)."""
    h = BackendHealth("go", CHECK, OutlierDetection())
    now = 0.0
    durations = []
    for _ in range(4):
        durations.append(eject(h, now))
        now = h.ejected_until  # fails again the moment it is back
    assert durations == [30.0, 60.0, 90.0, 120.0]
    assert eject(h, now + 600.0) == 30.0
    assert h.ejections == 5  # the counter still counts every ejection


def test_multiplier_decays_one_step_per_interval_available() -> None:
    outlier = OutlierDetection(base_ejection=30.0, max_ejection=300.0, decay_interval=10.0)
    h = BackendHealth("go", CHECK, outlier)
    assert eject(h, 0.0) == 30.0
    assert eject(h, 30.0) == 60.0
    assert eject(h, 90.0) == 90.0  # until 180
    assert [h.multiplier(t) for t in (100.0, 179.0, 180.0)] == [3, 3, 3]  # no decay while out
    assert [h.multiplier(t) for t in (189.99, 190.0, 199.99, 200.0, 210.0, 10_000.0)] == [
        3, 2, 2, 1, 0, 0,
    ]  # fmt: skip
    # back 15 s: one step down, so the next ejection is the third again, not the fourth
    assert eject(h, 195.0) == 90.0


def test_multiplier_is_capped_so_the_way_down_stays_short() -> None:
    outlier = OutlierDetection(base_ejection=30.0, max_ejection=100.0, decay_interval=10.0)
    h = BackendHealth("go", CHECK, outlier)
    now = 0.0
    for _ in range(20):  # a backend flapping for a long time
        eject(h, now)
        now = h.ejected_until
    assert h.multiplier(now) == 4  # ceil(100 / 30): the first multiplier that reaches the cap
    assert eject(h, now) == 100.0  # the ejection itself is capped at max_ejection
    now = h.ejected_until
    assert h.multiplier(now + 40.0) == 0  # four intervals back to base, not twenty


def test_decay_pauses_while_active_checks_fail() -> None:
    outlier = OutlierDetection(base_ejection=30.0, max_ejection=300.0, decay_interval=10.0)
    h = BackendHealth("go", HealthCheck(healthy_threshold=1, unhealthy_threshold=1), outlier)
    eject(h, 0.0)
    eject(h, 30.0)  # multiplier 2, out until 90
    assert h.record_check(False, 50.0) == "unhealthy"
    assert h.multiplier(500.0) == 2  # down is not healthy: no decay
    assert h.record_check(True, 500.0) == "healthy"
    assert [h.multiplier(t) for t in (509.0, 510.0, 520.0)] == [2, 1, 0]


def test_decay_that_started_is_kept_when_checks_then_fail() -> None:
    outlier = OutlierDetection(base_ejection=30.0, max_ejection=300.0, decay_interval=10.0)
    h = BackendHealth("go", HealthCheck(healthy_threshold=1, unhealthy_threshold=1), outlier)
    eject(h, 0.0)
    eject(h, 30.0)
    eject(h, 90.0)  # multiplier 3, out until 180
    assert h.record_check(False, 205.0) == "unhealthy"  # two steps earned by then
    assert h.multiplier(1_000.0) == 1
    assert h.record_check(True, 1_000.0) == "healthy"
    assert h.multiplier(1_010.0) == 0


def test_healthy_again_during_an_ejection_decays_from_its_end() -> None:
    outlier = OutlierDetection(base_ejection=30.0, max_ejection=300.0, decay_interval=10.0)
    h = BackendHealth("go", HealthCheck(healthy_threshold=1, unhealthy_threshold=1), outlier)
    assert h.record_check(False, 0.0) == "unhealthy"
    eject(h, 1.0)  # panic-mode traffic still reaches it; out until 31
    assert h.multiplier(100.0) == 1  # no decay while checks fail
    assert h.record_check(True, 5.0) == "healthy"
    assert [h.multiplier(t) for t in (40.99, 41.0)] == [1, 0]
