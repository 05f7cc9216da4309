"""The sans-IO core of bench/fixed_rate.py: schedule, queueing, latency from the due time,
nearest-rank percentiles. Time is given, never read."""

from __future__ import annotations

import pytest

from cutover.bench import fixed_rate as fr


def test_requests_fall_due_at_i_over_rate() -> None:
    s = fr.Schedule(rate=4, count=3)
    assert [s.due(i) for i in range(3)] == [0.0, 0.25, 0.5]
    assert s.next_due() == 0.0
    assert s.connection_ready(7, 0.0) == [(7, 0)]
    assert s.next_due() == 0.25
    assert s.advance(0.24) == []  # nothing new yet, and the one connection is busy anyway
    assert s.answered(7, 0.1, ok=True) == []
    assert s.advance(0.25) == [(7, 1)]
    assert s.answered(7, 0.3, ok=True) == []
    assert s.advance(0.6) == [(7, 2)]  # sent 0.1 s late: the lag counts
    assert not s.done
    s.answered(7, 0.61, ok=True)
    assert s.done and s.next_due() is None
    assert s.latencies == pytest.approx([0.1, 0.05, 0.11])
    assert s.service == pytest.approx([0.1, 0.05, 0.01])
    assert s.lags == pytest.approx([0.0, 0.0, 0.1])


def test_a_stall_counts_for_every_request_that_waited_behind_it() -> None:
    """Closed loop vs open loop on the same events: 1 connection, 10/s, the first answer
    takes 1 s, the others are instant."""
    s = fr.Schedule(rate=10, count=10)
    assert s.connection_ready(0, 0.0) == [(0, 0)]
    assert s.advance(0.95) == []  # requests 1..9 are due and wait
    assert s.waiting == 9
    pairs = s.answered(0, 1.0, ok=True)
    assert pairs == [(0, 1)]
    now = 1.0
    for i in range(2, 10):
        now += 0.001
        assert s.answered(0, now, ok=True) == [(0, i)]
    s.answered(0, now + 0.001, ok=True)
    assert s.done
    r = s.result(5.0, connections=1, statuses={"200": 10})
    # from the schedule: request k is answered at 1.0 s + k ms and was due at k / 10 s, so
    # its latency is 1000 - 99 k ms: 1000, 901, ..., 109; rank 5 of 10 is request 5
    assert r.latency_ms["50"] == pytest.approx(505.0)
    assert r.latency_ms["max"] == pytest.approx(1000.0)
    # from the send time, as a closed loop would see it: one slow request, p50 of 1 ms
    assert r.service_ms["50"] == pytest.approx(1.0)
    assert r.service_ms["max"] == pytest.approx(1000.0)
    assert r.lag_ms["max"] == pytest.approx(900.0)  # request 1 waited 0.9 s for the connection
    assert (r.ok, r.errors, r.unfinished) == (10, 0, 0)
    assert r.seconds == pytest.approx(1.009)  # the last answer, not the end of the run


def test_free_connections_are_used_in_turn() -> None:
    s = fr.Schedule(rate=1000, count=4)
    assert s.connection_ready(0, 0.0) == [(0, 0)]
    assert s.connection_ready(1, 0.0) == []
    assert s.advance(0.001) == [(1, 1)]
    s.answered(0, 0.0015, ok=True)
    s.answered(1, 0.0016, ok=True)
    assert s.advance(0.002) == [(0, 2)]  # 0 was freed first
    assert s.advance(0.003) == [(1, 3)]


def test_errors_are_counted_not_timed_and_lost_connections_fail_their_request() -> None:
    s = fr.Schedule(rate=100, count=3)
    s.connection_ready(0, 0.0)
    s.connection_ready(1, 0.0)
    s.answered(0, 0.005, ok=False)
    assert s.advance(0.01) == [(1, 1)]  # 1 has been idle longest
    s.connection_lost(1, 0.012)
    assert not s.busy(1)
    assert s.advance(0.02) == [(0, 2)]
    s.connection_lost(1, 0.02)  # idle or gone twice: nothing more to fail
    s.answered(0, 0.021, ok=True)
    r = s.result(0.5, connections=2, statuses={"500": 1, "200": 1})
    assert (r.ok, r.errors, r.unfinished) == (1, 2, 0)
    assert r.latency_ms["max"] == pytest.approx(1.0)
    assert r.statuses == {"200": 1, "500": 1}


def test_unfinished_requests_keep_their_wait_as_a_lower_bound() -> None:
    s = fr.Schedule(rate=10, count=5)
    s.connection_ready(0, 0.0)
    s.advance(0.25)  # 0 in flight, 1 and 2 waiting, 3 and 4 not yet due
    r = s.result(0.3, connections=1, statuses={})
    assert (r.ok, r.errors, r.unfinished) == (0, 0, 5)
    assert r.latency_ms["max"] == pytest.approx(300.0)  # request 0
    assert r.latency_ms["50"] == pytest.approx(200.0)  # 0.3, 0.2, 0.1 -> rank 2
    assert r.seconds == pytest.approx(0.3)
    assert r.failed == 5


def test_percentiles_are_nearest_rank_over_every_sample() -> None:
    s = fr.Schedule(rate=1, count=0)
    s.latencies = [i / 1000 for i in range(1, 1001)]  # 1 .. 1000 ms
    r = s.result(0.0, connections=1, statuses={})
    assert r.latency_ms == pytest.approx(
        {"50": 500.0, "90": 900.0, "99": 990.0, "99.9": 999.0, "max": 1000.0}
    )
    assert r.service_ms == {} and r.lag_ms == {}


def test_achieved_rate() -> None:
    s = fr.Schedule(rate=2, count=2)
    s.connection_ready(0, 0.0)
    s.answered(0, 0.1, ok=True)
    s.advance(0.5)
    s.answered(0, 1.0, ok=True)
    assert s.result(9.0, 1, {}).achieved_rps == pytest.approx(2.0)


@pytest.mark.parametrize(("rate", "count"), [(0, 1), (-1, 1), (float("inf"), 1), (1, -1)])
def test_schedule_refuses_nonsense(rate: float, count: int) -> None:
    with pytest.raises(ValueError):
        fr.Schedule(rate, count)


def test_build_request() -> None:
    host, port, raw = fr.build_request("http://127.0.0.1:8080/a?b=1")
    assert (host, port) == ("127.0.0.1", 8080)
    assert raw == b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
    _, port, raw = fr.build_request(
        "http://h/post", "POST", b"{}", [("Content-Type", "application/json")]
    )
    assert port == 80
    assert raw == (
        b"POST /post HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    with pytest.raises(ValueError):
        fr.build_request("https://h/")
