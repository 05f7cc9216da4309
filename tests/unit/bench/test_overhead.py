"""The pure parts of bench/overhead.py: wrk parsing, medians and ratios, Markdown, configs.

No sockets, no wrk; nothing here is timed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml

from cutover.bench import overhead as o
from cutover.bench.fixed_rate import FixedRateResult
from cutover.proxy.config import parse_config

WRK_CUTOVER = """\
Running 10s test @ http://127.0.0.1:52009/small.json
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.43ms    8.14ms 167.67ms   90.95%
    Req/Sec     2.81k     0.88k    4.19k    80.00%
  Latency Distribution
     50%   10.25ms
     75%   12.65ms
     90%   18.22ms
     99%    1.05s
  27910 requests in 10.01s, 13.70MB read
  Socket errors: connect 0, read 3, write 0, timeout 12
  Non-2xx or 3xx responses: 41
Requests/sec:   2788.21
Transfer/sec:      1.37MB
"""

WRK_DIRECT = """\
Running 10s test @ http://127.0.0.1:49385/64k.bin
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   630.12us  200.11us   5.00ms   90.00%
    Req/Sec    31.20k     2.00k   35.00k    80.00%
  Latency Distribution
     50%  473.00us
     75%  700.00us
     90%  800.00us
     99%    1.50ms
  312240 requests in 10.00s, 19.08GB read
Requests/sec:  31224.00
Transfer/sec:      1.91GB
"""


# ---------------------------------------------------------------------------------------------
# wrk output


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("630.00us", 0.63),
        ("1.50ms", 1.5),
        ("2.00s", 2000.0),
        ("1.00m", 60_000.0),
        (" 12ms ", 12.0),
    ],
)
def test_parse_time_ms_units(text: str, ms: float) -> None:
    assert o.parse_time_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["", "12", "1.5 ms", "3ns", "fast"])
def test_parse_time_ms_refuses_other_text(text: str) -> None:
    with pytest.raises(ValueError):
        o.parse_time_ms(text)


def test_parse_size_bytes_binary_units() -> None:
    assert o.parse_size_bytes("812B") == 812
    assert o.parse_size_bytes("1.50KB") == 1536
    assert o.parse_size_bytes("13.70MB") == round(13.70 * 1024**2)
    assert o.parse_size_bytes("19.08GB") == round(19.08 * 1024**3)
    with pytest.raises(ValueError):
        o.parse_size_bytes("12 MB")


def test_parse_wrk_reads_rate_totals_percentiles_and_errors() -> None:
    r = o.parse_wrk(WRK_CUTOVER)
    assert r.rps == pytest.approx(2788.21)
    assert r.requests == 27910
    assert r.seconds == pytest.approx(10.01)
    assert r.bytes_read == round(13.70 * 1024**2)
    assert r.latency_ms == pytest.approx({"50": 10.25, "75": 12.65, "90": 18.22, "99": 1050.0})
    assert r.latency_avg_ms == pytest.approx(12.43)
    assert r.latency_max_ms == pytest.approx(167.67)
    assert r.non_2xx == 41
    assert r.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 12}
    assert r.errors == 15


def test_parse_wrk_clean_run_in_microseconds() -> None:
    r = o.parse_wrk(WRK_DIRECT)
    assert r.rps == pytest.approx(31224.0)
    assert r.latency_ms["50"] == pytest.approx(0.473)
    assert r.latency_ms["99"] == pytest.approx(1.5)
    assert r.latency_avg_ms == pytest.approx(0.63012)
    assert r.non_2xx == 0
    assert r.socket_errors == {}
    assert r.errors == 0
    assert r.bytes_per_request > 65536  # the whole 64 KiB body came back


def test_parse_wrk_fractional_percentiles_keep_their_decimals() -> None:
    text = WRK_DIRECT.replace("     99%    1.50ms", "  99.90%    2.50ms\n 99.00%    1.50ms")
    r = o.parse_wrk(text)
    assert r.latency_ms["99.90"] == pytest.approx(2.5)
    assert r.latency_ms["99"] == pytest.approx(1.5)


def test_parse_wrk_without_latency_distribution() -> None:
    head, _, tail = WRK_DIRECT.partition("  Latency Distribution\n")
    text = head + tail.split("\n", 4)[4]
    r = o.parse_wrk(text)
    assert r.latency_ms == {}
    assert r.rps == pytest.approx(31224.0)


def test_parse_wrk_refuses_output_without_a_rate() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        o.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


# ---------------------------------------------------------------------------------------------
# Rounds, medians, ratios


def test_parse_workers() -> None:
    assert o.parse_workers("1,2") == [1, 2]
    assert o.parse_workers(" 4 ") == [4]
    for bad in ("", "0", "1,-2", "x"):
        with pytest.raises(ValueError):
            o.parse_workers(bad)


def test_side_order_rotates_so_every_side_takes_every_slot() -> None:
    orders = [o.side_order(r) for r in range(3)]
    assert orders[0] == ["direct", "nginx", "cutover"]
    assert orders[1] == ["nginx", "cutover", "direct"]
    assert orders[2] == ["cutover", "direct", "nginx"]
    for slot in range(3):
        assert {order[slot] for order in orders} == set(o.SIDES)
    assert o.side_order(3) == orders[0]


def test_paired_ratio_is_median_of_per_round_ratios() -> None:
    r = o.paired_ratio({0: 10.0, 1: 30.0, 2: 20.0}, {0: 100.0, 1: 100.0, 2: 50.0})
    assert r.median == pytest.approx(0.3)
    assert r.low == pytest.approx(0.1)
    assert r.high == pytest.approx(0.4)


def test_paired_ratio_skips_unpaired_and_zero_rounds() -> None:
    r = o.paired_ratio({0: 10.0, 1: 30.0, 2: 5.0}, {0: 20.0, 2: 0.0})
    assert (r.median, r.low, r.high) == (0.5, 0.5, 0.5)
    assert o.paired_ratio({}, {0: 1.0}) == o.RatioSummary(None, None, None)


def result(rps: float, p50: float = 1.0, p99: float = 5.0, **kw: object) -> o.WrkResult:
    args: dict[str, object] = {
        "rps": rps,
        "requests": int(rps * 10),
        "seconds": 10.0,
        "bytes_read": int(rps * 10) * 300,
        "latency_ms": {"50": p50, "99": p99},
    }
    args.update(kw)
    return o.WrkResult(**args)  # type: ignore[arg-type]


def sample_runs() -> list[o.Run]:
    rps = {"direct": [40_000, 50_000, 45_000], "nginx": [30_000, 34_000, 20_000]}
    rps["cutover"] = [3_000, 3_400, 4_000]
    runs = []
    for workers in (1, 2):
        for rnd in range(3):
            for case in o.CASES:
                for side in o.side_order(rnd):
                    value = rps[side][rnd] * workers
                    extra: dict[str, object] = {}
                    if side == "cutover" and case.key == "post" and workers == 2 and rnd == 1:
                        extra = {"non_2xx": 7, "socket_errors": {"timeout": 2}}
                    res = result(value, p50=rnd + 1.0, p99=10.0 * (rnd + 1), **extra)
                    # CPU seconds: cutover 100/80/90 µs per request, nginx 20/25/30, direct none
                    per_req = {"cutover": [100, 80, 90], "nginx": [20, 25, 30]}.get(side)
                    cpu = None if per_req is None else per_req[rnd] * res.requests / 1e6
                    runs.append(o.Run(workers, rnd, case.key, side, res, cpu))
    return runs


def test_summarize_medians_ratios_and_error_totals() -> None:
    summary = o.summarize(sample_runs())
    assert list(summary) == [1, 2]
    small = summary[1]["small"]
    assert small["sides"]["nginx"].rps == 30_000
    assert small["sides"]["cutover"].rps == 3_400
    assert small["sides"]["cutover"].p50_ms == 2.0
    assert small["sides"]["cutover"].p99_ms == 20.0
    assert small["sides"]["cutover"].runs == 3
    # per-round ratios cutover/nginx: 0.1, 0.1, 0.2
    assert small["ratios"]["nginx"].median == pytest.approx(0.1)
    assert small["ratios"]["nginx"].high == pytest.approx(0.2)
    # cutover/direct: 0.075, 0.068, 0.0889
    assert small["ratios"]["direct"].median == pytest.approx(3_000 / 40_000)
    post2 = summary[2]["post"]["sides"]["cutover"]
    assert (post2.non_2xx, post2.socket_errors) == (7, 2)
    assert summary[2]["small"]["sides"]["cutover"].non_2xx == 0


def test_summarize_cpu_per_request_and_its_ratio() -> None:
    small = o.summarize(sample_runs())[1]["small"]
    assert small["sides"]["cutover"].cpu_us_per_request == pytest.approx(90.0)
    assert small["sides"]["nginx"].cpu_us_per_request == pytest.approx(25.0)
    assert small["sides"]["direct"].cpu_us_per_request is None
    # per-round cutover/nginx: 5.0, 3.2, 3.0
    cpu = small["ratios"]["cpu"]
    assert (cpu.median, cpu.low, cpu.high) == pytest.approx((3.2, 3.0, 5.0))


# User share of each round's CPU time: cutover 0.5/0.75/0.7 of 100/80/90 µs per request (user
# 50/60/63, system 50/20/27), nginx 0.2 of 20/25/30 (user 4/5/6, system 16/20/24).
USER_SHARE = {"cutover": [0.5, 0.75, 0.7], "nginx": [0.2, 0.2, 0.2]}


def with_split(runs: list[o.Run]) -> list[o.Run]:
    """`runs` with their CPU seconds split into user and system by USER_SHARE."""
    out = []
    for r in runs:
        if r.cpu_seconds is None:
            out.append(r)
            continue
        user = r.cpu_seconds * USER_SHARE[r.side][r.round]
        out.append(replace(r, cpu_user_seconds=user, cpu_system_seconds=r.cpu_seconds - user))
    return out


def test_summarize_side_medians_of_user_and_of_system() -> None:
    runs = [r for r in with_split(sample_runs()) if (r.workers, r.case) == (1, "small")]
    mine = sorted((r for r in runs if r.side == "cutover"), key=lambda r: r.round)
    s = o.summarize_side(
        [r.result for r in mine],
        [r.cpu_seconds for r in mine],
        [r.cpu_user_seconds for r in mine],
        [r.cpu_system_seconds for r in mine],
    )
    assert s.cpu_us_per_request == pytest.approx(90.0)  # of 100, 80, 90
    assert s.cpu_user_us_per_request == pytest.approx(60.0)  # of 50, 60, 63
    assert s.cpu_system_us_per_request == pytest.approx(27.0)  # of 50, 20, 27
    # each part is its own median: they need not add up to the total's
    assert s.cpu_user_us_per_request + s.cpu_system_us_per_request != pytest.approx(90.0)
    total_only = o.summarize_side([r.result for r in mine], [r.cpu_seconds for r in mine])
    assert total_only.cpu_us_per_request == pytest.approx(90.0)
    assert total_only.cpu_user_us_per_request is None
    assert total_only.cpu_system_us_per_request is None


def test_summarize_splits_every_proxy_side_and_not_direct() -> None:
    small = o.summarize(with_split(sample_runs()))[1]["small"]["sides"]
    assert small["nginx"].cpu_user_us_per_request == pytest.approx(5.0)
    assert small["nginx"].cpu_system_us_per_request == pytest.approx(20.0)
    assert small["direct"].cpu_user_us_per_request is None
    assert small["direct"].cpu_system_us_per_request is None
    # the total and its ratio are what they were without the split
    assert small["cutover"].cpu_us_per_request == pytest.approx(90.0)
    plain = o.summarize(sample_runs())[1]["small"]["ratios"]["cpu"]
    assert o.summarize(with_split(sample_runs()))[1]["small"]["ratios"]["cpu"] == plain


def test_fmt_cpu_split() -> None:
    assert o.fmt_cpu_split(44.3, 31.3, 13.0) == "44.3 (31.3 + 13.0)"
    assert o.fmt_cpu_split(1234.0, 1000.0, 234.0) == "1,234 (1,000 + 234)"
    assert o.fmt_cpu_split(44.3, None, None) == "44.3"
    assert o.fmt_cpu_split(44.3, 31.3, None) == "44.3"
    assert o.fmt_cpu_split(None, None, None) == o.DASH


def test_render_tables_show_the_split_when_the_runs_have_it() -> None:
    text = o.render_tables(o.summarize(with_split(sample_runs())), rounds=3)
    assert "| p50 | p99 | CPU µs/request (user + sys) | errors |" in text
    assert (
        "| GET small JSON | cutover | 3,400 | 2.00 ms | 20.0 ms | 90.0 (60.0 + 27.0) | 0 |" in text
    )
    assert "| GET small JSON | nginx | 30,000 | 2.00 ms | 20.0 ms | 25.0 (5.0 + 20.0) | 0 |" in text
    assert "| GET small JSON | direct | 45,000 | 2.00 ms | 20.0 ms | \u2013 | 0 |" in text
    assert "| cutover / nginx CPU per request |" in text  # the ratio stays one of totals
    section = o.render_section(o.summarize(with_split(sample_runs())), META)
    assert "- CPU µs/request (user + sys): the total, then in brackets its user part" in section


def test_render_tables_without_the_split_show_the_total_only() -> None:
    text = o.render_tables(o.summarize(sample_runs()), rounds=3)
    assert "| p50 | p99 | CPU µs/request | errors |" in text
    assert "(user + sys)" not in text
    assert "(user + sys)" not in o.render_section(o.summarize(sample_runs()), META)


def test_cpu_us_per_request() -> None:
    assert o.cpu_us_per_request(0.5, 10_000) == pytest.approx(50.0)
    assert o.cpu_us_per_request(None, 10) is None
    assert o.cpu_us_per_request(1.0, 0) is None


def test_render_tables_show_ratios_goals_and_errors() -> None:
    text = o.render_tables(o.summarize(sample_runs()), rounds=3)
    assert "#### 1 worker (nginx proxy and cutover alike)" in text
    assert "#### 2 workers" in text
    assert "| GET small JSON | 0.10 (0.10\u20130.20) |" in text
    assert "≥ 0.5" in text and "≥ 0.7" in text
    assert "| cutover / nginx CPU per request |" in text
    assert "| ≥ 0.5 | 3.20 (3.00\u20135.00) |" in text
    assert "| p50 | p99 | CPU µs/request | errors |" in text
    assert "| GET small JSON | cutover | 3,400 | 2.00 ms | 20.0 ms | 90.0 | 0 |" in text
    assert "| GET small JSON | nginx | 30,000 | 2.00 ms | 20.0 ms | 25.0 | 0 |" in text
    assert "| GET small JSON | direct | 45,000 | 2.00 ms | 20.0 ms | \u2013 | 0 |" in text
    assert "Fixed rate" not in text  # none given
    assert "**7 non-2xx**, **2 socket errors** of 208,000" in text
    assert "rps (median of 3)" in text


def test_fmt_ms_picks_a_readable_unit() -> None:
    assert o.fmt_ms(0.473) == "473 µs"
    assert o.fmt_ms(2.5) == "2.50 ms"
    assert o.fmt_ms(52.14) == "52.1 ms"
    assert o.fmt_ms(None) == o.DASH


META = {
    "date": "2026-11-21 22:38 UTC",
    "machine": {"nproc": "2", "cpu_model": "Test CPU", "kernel": "Linux 6"},
    "versions": {"Python": "3.11.7", "nginx": "1.22.1"},
    "command": "python -m cutover.bench.overhead --rounds 3",
    "rounds": 3,
    "load": "wrk -t1 -c32",
    "layout": "origin pinned",
}


def test_render_section_has_markers_machine_command_and_notes() -> None:
    section = o.render_section(o.summarize(sample_runs()), META, ["wrk2 skipped"])
    assert section.startswith(o.BEGIN + "\n")
    assert section.endswith(o.END + "\n")
    assert "2 CPUs (Test CPU)" in section
    assert "Python 3.11.7, nginx 1.22.1" in section
    assert "`python -m cutover.bench.overhead --rounds 3`" in section
    assert "- wrk2 skipped" in section


def test_replace_section_keeps_the_rest_of_the_document() -> None:
    doc = f"# Benchmarks\n\nintro\n\n{o.BEGIN}\nold figures\n{o.END}\n\n## Later\ntext\n"
    new = f"{o.BEGIN}\nnew figures\n{o.END}\n"
    out = o.replace_section(doc, new)
    assert out == f"# Benchmarks\n\nintro\n\n{new}\n## Later\ntext\n"
    assert o.replace_section(out, new) == out


def test_replace_section_appends_when_there_are_no_markers() -> None:
    new = f"{o.BEGIN}\nx\n{o.END}\n"
    assert o.replace_section("", new) == new
    assert o.replace_section("# B\nintro", new) == f"# B\nintro\n\n{new}"


def test_runs_from_json_round_trip() -> None:
    runs = sample_runs()[:4]
    payload = json.loads(json.dumps({"runs": [run_row(r) for r in runs]}))
    assert o.runs_from_json(payload) == runs


def test_runs_from_json_reparses_the_raw_wrk_output() -> None:
    raw = {"workers": 1, "round": 0, "case": "small", "side": "cutover"}
    payload = {"runs": [dict(raw, result={}, wrk_output=WRK_CUTOVER)]}
    (run,) = o.runs_from_json(payload)
    assert run.result == o.parse_wrk(WRK_CUTOVER)
    assert run.cpu_seconds is None  # older files have no CPU figures
    assert o.fixed_runs_from_json(payload) == []


def test_summary_to_json_is_plain_data() -> None:
    data = o.summary_to_json(o.summarize(sample_runs()))
    assert data["1"]["small"]["ratios"]["nginx"]["median"] == pytest.approx(0.1)
    assert data["2"]["post"]["sides"]["cutover"]["non_2xx"] == 7
    json.dumps(data)


# ---------------------------------------------------------------------------------------------
# Payloads and configs


def test_post_body_is_json_of_the_exact_size() -> None:
    body = o.make_post_body()
    assert len(body) == 20 * 1024
    doc = json.loads(body)
    assert len(doc["alerts"]) > 50
    assert len(o.make_post_body(1000)) == 1000
    with pytest.raises(ValueError):
        o.make_post_body(5)


def test_big_body_size() -> None:
    assert len(o.make_big_body()) == 65536


def test_post_lua_embeds_the_body_in_a_safe_long_string() -> None:
    lua = o.render_post_lua(o.make_post_body())
    assert 'wrk.method = "POST"' in lua
    assert 'wrk.headers["Content-Type"] = "application/json"' in lua
    assert "wrk.body = [[" in lua
    tricky = o.render_post_lua(b'{"a":"]]","b":"]=]"}')
    assert 'wrk.body = [==[{"a":"]]","b":"]=]"}]==]' in tricky


def test_wrk_command() -> None:
    cmd = o.wrk_command(
        "http://127.0.0.1:1/post", duration=10, connections=32, cpu="0", script="/t/post.lua"
    )
    assert cmd == [
        "taskset",
        "-c",
        "0",
        "wrk",
        "-t1",
        "-c32",
        "-d10s",
        "--latency",
        "-s",
        "/t/post.lua",
        "http://127.0.0.1:1/post",
    ]
    plain = o.wrk_command("http://h/x", duration=2.5, connections=8, cpu=None, script=None)
    assert plain == ["wrk", "-t1", "-c8", "-d2.5s", "--latency", "http://h/x"]


def balanced(conf: str) -> bool:
    depth = 0
    for ch in conf:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_origin_conf() -> None:
    conf = o.render_origin_conf("/tmp/p", 4000, "/tmp/p/www")
    assert balanced(conf)
    assert "worker_processes 1;" in conf
    assert "listen 127.0.0.1:4000;" in conf
    assert "root /tmp/p/www;" in conf
    assert "access_log off;" in conf
    assert "return 200 '{\"ok\":true}';" in conf
    assert "client_body_buffer_size 64k;" in conf
    assert "pid /tmp/p/origin.pid;" in conf
    assert "client_body_temp_path /tmp/p/origin-client-body;" in conf
    assert "daemon" not in conf  # given on the command line
    assert "user " not in conf
    assert o.render_origin_conf("/p", 1, "/w", user="root").startswith("user root;\n")


@pytest.mark.parametrize("workers", [1, 2])
def test_proxy_nginx_is_rendered_from_the_cutover_yaml(tmp_path: Path, workers: int) -> None:
    yaml_path = tmp_path / "cutover.yaml"
    yaml_path.write_text(o.render_cutover_config(4002, 4000, str(tmp_path / "cutover.log")))
    conf, warnings = o.render_proxy_nginx(yaml_path, 4001, workers)
    assert warnings == []
    assert balanced(conf)
    assert f"from {yaml_path}." in conf  # the renderer's own header
    assert f"worker_processes {workers};" in conf
    assert "listen 127.0.0.1:4001;" in conf
    assert "listen 127.0.0.1:4002;" not in conf
    assert "server 127.0.0.1:4000 " in conf
    assert "keepalive 64;" in conf
    assert conf.count("keepalive_requests 10000;") == 2  # client side and upstream
    assert "proxy_http_version 1.1;" in conf
    assert 'proxy_set_header Connection "";' in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert "proxy_set_header X-Request-ID $cutover_request_id;" in conf
    assert "access_log cutover-nginx-access.log;" in conf  # under the prefix
    assert "pid cutover-nginx.pid;" in conf
    assert "0.0.0.0" not in conf
    assert "user " not in conf  # given on the command line, as root only


def test_origin_echoes_the_forwarded_headers() -> None:
    conf = o.render_origin_conf("/tmp/p", 4000, "/tmp/p/www")
    assert "location = /headers {" in conf
    assert (
        'return 200 "$http_x_forwarded_for|$http_x_forwarded_proto|$http_x_forwarded_host'
        '|$http_x_request_id";' in conf
    )


def test_forwarded_problems() -> None:
    good = "127.0.0.1|http|127.0.0.1:4001|abc123"
    assert o.forwarded_problems(good, "abc123", 4001) == []
    assert o.forwarded_problems(good + "\n", "abc123", 4001) == []
    problems = o.forwarded_problems("127.0.0.1|http|127.0.0.1||", None, 4001)
    assert problems == ["origin answered '127.0.0.1|http|127.0.0.1||', not four fields"]
    problems = o.forwarded_problems("||127.0.0.1|", None, 4001)
    assert problems == [
        "X-Forwarded-For '', expected '127.0.0.1'",
        "X-Forwarded-Proto '', expected 'http'",
        "X-Forwarded-Host '127.0.0.1', expected '127.0.0.1:4001'",
        "no X-Request-ID upstream",
    ]
    assert o.forwarded_problems(good, "other", 4001) == [
        "X-Request-ID 'abc123' upstream but 'other' in the answer"
    ]


# ---------------------------------------------------------------------------------------------
# CPU time from /proc


STAT = (
    "4242 (python -m (x) y) S 4200 4242 4242 0 -1 4194560 1000 0 0 0 "
    "150 30 7 3 20 0 3 0 12345 100000000 5000 18446744073709551615"
)


def test_parse_proc_stat_survives_spaces_and_parentheses_in_the_name() -> None:
    # utime 150, stime 30, cutime 7, cstime 3: reaped children's time goes to the same part
    assert o.parse_proc_stat(STAT) == (4200, 150 + 7, 30 + 3)


def test_parse_proc_stat_splits_user_and_system_whatever_the_name_holds() -> None:
    # a name that looks like the start of the fields after it: only the last ")" ends it
    tricky = STAT.replace("(python -m (x) y)", "(a) S 1 2 (b c) R 9)")
    assert o.parse_proc_stat(tricky) == (4200, 157, 33)
    fields = "S 4200 4242 4242 0 -1 4194560 1000 0 0 0 11 22 33 44 20 0 3 0 12345 1 2 3"
    assert o.parse_proc_stat(f"7 (nginx: worker process) {fields}") == (4200, 11 + 33, 22 + 44)


def test_tree_ticks_adds_every_descendant_and_nothing_else() -> None:
    stats = {
        100: (1, 10, 1),  # supervisor
        101: (100, 200, 20),  # worker
        102: (100, 300, 30),  # worker
        103: (101, 5, 2),  # a worker's child
        200: (1, 9999, 9999),  # unrelated
        201: (200, 9999, 9999),
    }
    assert o.tree_ticks(stats, 100) == (10 + 200 + 300 + 5, 1 + 20 + 30 + 2)
    assert o.tree_ticks(stats, 102) == (300, 30)
    assert o.tree_ticks(stats, 999) is None


def test_cpu_delta() -> None:
    assert o.cpu_delta(1.0, 1.25) == pytest.approx(0.25)
    assert o.cpu_delta(None, 1.0) is None
    assert o.cpu_delta(2.0, None) is None
    assert o.cpu_delta(2.0, 1.0) == 0.0


def test_cpu_time_delta_keeps_the_parts_and_their_sum() -> None:
    spent = o.cpu_time_delta(o.CpuTime(1.0, 0.5), o.CpuTime(1.75, 0.75))
    assert spent == o.CpuTime(pytest.approx(0.75), pytest.approx(0.25))
    assert spent is not None and spent.total == pytest.approx(1.0)
    # a part that went down (a descendant gone unreaped) counts as nothing, like cpu_delta
    assert o.cpu_time_delta(o.CpuTime(2.0, 1.0), o.CpuTime(1.0, 1.5)) == o.CpuTime(0.0, 0.5)
    assert o.cpu_time_delta(None, o.CpuTime(1.0, 1.0)) is None
    assert o.cpu_time_delta(o.CpuTime(1.0, 1.0), None) is None
    assert o.cpu_fields(o.CpuTime(0.5, 0.25)) == (0.75, 0.5, 0.25)
    assert o.cpu_fields(None) == (None, None, None)


def test_tree_cpu_seconds_of_this_process() -> None:
    sum(i * i for i in range(300_000))  # some CPU time of our own
    spent = o.tree_cpu_seconds(os.getpid())
    assert spent is not None
    assert spent.user > 0.0 and spent.system >= 0.0
    assert spent.total == spent.user + spent.system
    mine = os.times()
    assert spent.user <= mine.user + mine.children_user + 0.05


# ---------------------------------------------------------------------------------------------
# Fixed rate


def fixed_result(p50: float, p99: float, **kw: object) -> FixedRateResult:
    args: dict[str, object] = {
        "rate": 1700.0,
        "connections": 32,
        "scheduled": 8500,
        "ok": 8500,
        "errors": 0,
        "unfinished": 0,
        "seconds": 5.0,
        "latency_ms": {"50": p50, "90": p99 / 2, "99": p99, "99.9": p99 * 2, "max": p99 * 3},
        "service_ms": {"50": p50, "99": p99},
        "lag_ms": {"50": 0.05, "99": 0.2},
        "statuses": {"200": 8500},
    }
    args.update(kw)
    return FixedRateResult(**args)  # type: ignore[arg-type]


def sample_fixed_runs() -> list[o.FixedRun]:
    # ms per round: direct p50 .20/.30/.25, p99 1.0/1.2/1.1; nginx adds .05/.10/.08 and
    # .2/.4/.3; cutover adds .30/.20/.40 and 0.8/1.5/0.9
    base = {"p50": [0.20, 0.30, 0.25], "p99": [1.0, 1.2, 1.1]}
    add = {
        "direct": ([0, 0, 0], [0, 0, 0]),
        "nginx": ([0.05, 0.10, 0.08], [0.2, 0.4, 0.3]),
        "cutover": ([0.30, 0.20, 0.40], [0.8, 1.5, 0.9]),
    }
    runs = []
    for rnd in range(3):
        for side in o.side_order(rnd):
            p50 = base["p50"][rnd] + add[side][0][rnd]
            p99 = base["p99"][rnd] + add[side][1][rnd]
            extra: dict[str, object] = {}
            if side == "cutover" and rnd == 2:
                extra = {"ok": 8490, "errors": 4, "unfinished": 6}
            cpu = {"direct": None, "nginx": 0.17, "cutover": 0.68}[side]
            busy = {"direct": 0.01, "nginx": 0.5, "cutover": 0.7 + rnd / 100}[side]
            inside = 0.6 + rnd / 10 if side == "cutover" else None
            result = fixed_result(p50, p99, **extra)
            runs.append(o.FixedRun(1, rnd, side, result, cpu, busy, inside))
    return runs


def test_fixed_rate_is_half_of_cutovers_median_peak_on_small_json() -> None:
    summary = o.summarize(sample_runs())
    assert o.fixed_rate_for(summary[1]) == pytest.approx(1_700)
    assert o.fixed_rate_for(summary[2]) == pytest.approx(3_400)
    assert o.fixed_rate_for({}) is None


def test_summarize_fixed_medians_and_added_latency_over_direct() -> None:
    fixed = o.summarize_fixed(sample_fixed_runs())
    assert list(fixed) == [1]
    assert len(fixed[1]) == 1
    data = fixed[1][0]
    assert data["share"] == 0.5
    assert (data["rate"], data["seconds"], data["connections"]) == (1700.0, 5.0, 32)
    sides = data["sides"]
    assert sides["direct"].p50_ms == pytest.approx(0.25)
    assert sides["direct"].p99_ms == pytest.approx(1.1)
    assert sides["cutover"].p99_ms == pytest.approx(2.0)  # 1.8, 2.7, 2.0
    assert sides["cutover"].failed == 10
    assert sides["cutover"].requests == 3 * 8500
    assert sides["nginx"].lag_p99_ms == pytest.approx(0.2)
    assert sides["nginx"].cpu_us_per_request == pytest.approx(20.0)  # 0.17 s / 8,500
    assert sides["cutover"].cpu_us_per_request == pytest.approx(80.0)  # median of 80, 80, 80.0x
    assert sides["direct"].cpu_us_per_request is None
    assert sides["cutover"].core_busy == pytest.approx(0.71)
    assert sides["cutover"].inside_p99_ms == pytest.approx(0.7)
    assert sides["nginx"].inside_p99_ms is None
    added = data["added"]
    assert added["nginx"]["50"].median == pytest.approx(0.08)
    assert (added["nginx"]["99"].min, added["nginx"]["99"].max) == pytest.approx((0.2, 0.4))
    assert added["cutover"]["99"].median == pytest.approx(0.9)  # 0.8, 1.5, 0.9
    assert added["cutover"]["50"].n == 3


def test_paired_difference_pairs_rounds() -> None:
    d = o.paired_difference({0: 1.5, 1: 2.0, 2: 9.0}, {0: 1.0, 1: 1.0})
    assert d is not None
    assert (d.median, d.min, d.max, d.n) == pytest.approx((0.75, 0.5, 1.0, 2))
    assert o.paired_difference({0: 1.0}, {1: 1.0}) is None


def test_render_fixed_table() -> None:
    fixed = o.summarize_fixed(sample_fixed_runs())
    text = o.render_tables(o.summarize(sample_runs()), rounds=3, fixed=fixed)
    assert "Fixed rate, GET small JSON: **1,700 requests/s** (half of cutover's median peak" in text
    assert "5 s per side and round, 32 connections" in text
    assert (
        "| added p99 over direct | goal (issue 9) | p99 inside cutover | proxy CPU busy "
        "| CPU µs/request | send lag p99 |"
    ) in text
    assert (
        "| direct | 250 µs | 1.10 ms | \u2013 | \u2013 | \u2013 | \u2013 | 1% | \u2013 "
        "| 200 µs | 0 |"
    ) in text
    assert (
        "| nginx | 330 µs | 1.40 ms | +80 µs (+50 µs to +100 µs) | +300 µs (+200 µs to +400 µs) "
        "| \u2013 | \u2013 | 50% | 20.0 | 200 µs | 0 |"
    ) in text
    assert (
        "| cutover | 500 µs | 2.00 ms | +300 µs (+200 µs to +400 µs) "
        "| +900 µs (+800 µs to +1.50 ms) | added p99 ≤ 1 ms | 700 µs | 71% | 80.0 | 200 µs "
        "| **10 failed** of 25,500 |"
    ) in text
    # only for one worker; the 2-worker block has no fixed-rate table here
    assert text.count("Fixed rate,") == 1


def test_fmt_delta_and_cpu() -> None:
    assert o.fmt_delta_ms(0.31) == "+310 µs"
    assert o.fmt_delta_ms(-1.2) == "\u22121.20 ms"
    assert o.fmt_delta_ms(None) == o.DASH
    assert o.fmt_cpu_us(23.456) == "23.5"
    assert o.fmt_cpu_us(1234.0) == "1,234"
    assert o.fmt_cpu_us(None) == o.DASH


def test_fixed_runs_from_json_round_trip_and_rerender(tmp_path: Path) -> None:
    runs = sample_runs()
    fixed_runs = sample_fixed_runs()
    payload = {
        "meta": dict(META, fixed_rate="bench.fixed_rate at half the peak"),
        "notes": [],
        "runs": [run_row(r) for r in runs],
        "fixed_rate_runs": [
            {
                "workers": r.workers,
                "round": r.round,
                "side": r.side,
                "result": asdict(r.result),
                "cpu_seconds": r.cpu_seconds,
                "core_busy": r.core_busy,
                "inside_p99_ms": r.inside_p99_ms,
            }
            for r in fixed_runs
        ],
    }
    payload = json.loads(json.dumps(payload))
    assert o.fixed_runs_from_json(payload) == fixed_runs
    path = tmp_path / "run.json"
    path.write_text(json.dumps(payload))
    out = tmp_path / "B.md"
    out.write_text(f"# B\n\nprocedure\n\n{o.BEGIN}\nold\n{o.END}\n")
    assert o.main(["--from-json", str(path), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# B\n\nprocedure\n\n" + o.BEGIN)
    assert "- Fixed rate: bench.fixed_rate at half the peak." in text
    assert "| cutover | 500 µs | 2.00 ms |" in text
    assert "| GET small JSON | cutover | 3,400 | 2.00 ms | 20.0 ms | 90.0 | 0 |" in text
    assert "old" not in text


def test_fixed_rate_table_shows_the_split() -> None:
    # cutover: 0.68 s = 0.51 user + 0.17 system over 8,500 requests; nginx total only
    runs = [
        replace(r, cpu_user_seconds=0.51, cpu_system_seconds=0.17) if r.side == "cutover" else r
        for r in sample_fixed_runs()
    ]
    data = o.summarize_fixed(runs)[1][0]
    cutover = data["sides"]["cutover"]
    assert cutover.cpu_user_us_per_request == pytest.approx(60.0)
    assert cutover.cpu_system_us_per_request == pytest.approx(20.0)
    text = "\n".join(o.render_fixed(data, 1))
    assert "| proxy CPU busy | CPU µs/request (user + sys) | send lag p99 |" in text
    assert "| 71% | 80.0 (60.0 + 20.0) | 200 µs |" in text
    assert "| 50% | 20.0 | 200 µs | 0 |" in text  # nginx without a split: its total
    plain = "\n".join(o.render_fixed(o.summarize_fixed(sample_fixed_runs())[1][0], 1))
    assert "| proxy CPU busy | CPU µs/request | send lag p99 |" in plain


def run_row(r: o.Run) -> dict[str, object]:
    """A raw JSON row as `main` writes it."""
    return {
        "workers": r.workers,
        "round": r.round,
        "case": r.case,
        "side": r.side,
        "result": asdict(r.result),
        "cpu_seconds": r.cpu_seconds,
        "cpu_user_seconds": r.cpu_user_seconds,
        "cpu_system_seconds": r.cpu_system_seconds,
    }


def test_from_json_renders_the_split_of_new_rows(tmp_path: Path) -> None:
    runs = with_split(sample_runs())
    fixed_runs = [
        replace(r, cpu_user_seconds=0.51, cpu_system_seconds=0.17) if r.side == "cutover" else r
        for r in sample_fixed_runs()
    ]
    fixed_rows = [
        {
            "workers": r.workers,
            "round": r.round,
            "side": r.side,
            "result": asdict(r.result),
            "cpu_seconds": r.cpu_seconds,
            "cpu_user_seconds": r.cpu_user_seconds,
            "cpu_system_seconds": r.cpu_system_seconds,
            "core_busy": r.core_busy,
            "inside_p99_ms": r.inside_p99_ms,
        }
        for r in fixed_runs
    ]
    payload = {"meta": META, "runs": [run_row(r) for r in runs], "fixed_rate_runs": fixed_rows}
    payload = json.loads(json.dumps(payload))
    assert o.runs_from_json(payload) == runs
    assert o.fixed_runs_from_json(payload) == fixed_runs
    path, out = tmp_path / "new.json", tmp_path / "B.md"
    path.write_text(json.dumps(payload))
    assert o.main(["--from-json", str(path), "--out", str(out)]) == 0
    text = out.read_text()
    assert (
        "| GET small JSON | cutover | 3,400 | 2.00 ms | 20.0 ms | 90.0 (60.0 + 27.0) | 0 |" in text
    )
    assert "| 71% | 80.0 (60.0 + 20.0) | 200 µs |" in text


def test_from_json_renders_an_old_row_without_the_split(tmp_path: Path) -> None:
    # a row as files before the split have it: cpu_seconds, no user or system keys
    runs = sample_runs()
    rows = []
    for r in runs:
        row = run_row(r)
        del row["cpu_user_seconds"], row["cpu_system_seconds"]
        rows.append(row)
    payload = {"meta": META, "notes": [], "runs": rows}
    (first, *_) = o.runs_from_json(json.loads(json.dumps(payload)))
    assert first.cpu_seconds == runs[0].cpu_seconds
    assert (first.cpu_user_seconds, first.cpu_system_seconds) == (None, None)
    path, out = tmp_path / "old.json", tmp_path / "B.md"
    path.write_text(json.dumps(payload))
    assert o.main(["--from-json", str(path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| p50 | p99 | CPU µs/request | errors |" in text
    assert "| GET small JSON | cutover | 3,400 | 2.00 ms | 20.0 ms | 90.0 | 0 |" in text
    assert "(user + sys)" not in text
    # exactly what the same runs rendered to before the split existed
    assert text == o.render_section(o.summarize(runs), META)


def test_fixed_to_json_is_plain_data() -> None:
    data = o.fixed_to_json(o.summarize_fixed(sample_fixed_runs()))
    assert data["1"][0]["rate"] == 1700.0
    assert data["1"][0]["sides"]["cutover"]["failed"] == 10
    assert data["1"][0]["added"]["cutover"]["99"]["median"] == pytest.approx(0.9)
    json.dumps(data)


def test_a_sweep_of_shares_gives_one_table_each_and_the_goal_only_at_half() -> None:
    low = [
        o.FixedRun(r.workers, r.round, r.side, replace(r.result, rate=510.0), share=0.15)
        for r in sample_fixed_runs()
    ]
    fixed = o.summarize_fixed([*sample_fixed_runs(), *low])
    assert [entry["share"] for entry in fixed[1]] == [0.15, 0.5]
    assert fixed[1][0]["rate"] == 510.0
    assert fixed[1][1]["rate"] == 1700.0
    text = o.render_tables(o.summarize(sample_runs()), rounds=3, fixed=fixed)
    assert text.index("**510 requests/s** (15% of cutover's median peak") < text.index(
        "**1,700 requests/s** (half of cutover's median peak"
    )
    assert text.count("added p99 ≤ 1 ms") == 1
    assert o.fixed_runs_from_json({"fixed_rate_runs": []}) == []


def test_parse_shares() -> None:
    assert o.parse_shares("0.5,0.15,0.5") == [0.15, 0.5]
    assert o._parse_args([]).fixed_rate_shares == [0.5]
    assert o._parse_args(["--fixed-rate-shares", "0.3,0.5"]).fixed_rate_shares == [0.3, 0.5]
    for bad in ("0", "1.5", "x", ""):
        with pytest.raises(ValueError):
            o.parse_shares(bad)


def test_fixed_rate_command() -> None:
    cmd = o.fixed_rate_command(
        "http://127.0.0.1:1/small.json", rate=1700.0, seconds=5, connections=32, cpu="0"
    )
    assert cmd[:4] == ["taskset", "-c", "0", o.sys.executable]
    assert cmd[4:] == [
        "-m",
        "cutover.bench.fixed_rate",
        "http://127.0.0.1:1/small.json",
        "--rate",
        "1700",
        "--seconds",
        "5",
        "--connections",
        "32",
    ]
    plain = o.fixed_rate_command("http://h/x", rate=12.5, seconds=2, connections=1, cpu=None)
    assert plain[0] == o.sys.executable and "12.5" in plain


def test_fixed_rate_seconds_option() -> None:
    assert o._parse_args([]).fixed_rate_seconds == 5.0
    assert o._parse_args(["--fixed-rate-seconds", "0"]).fixed_rate_seconds == 0.0
    with pytest.raises(SystemExit):
        o._parse_args(["--fixed-rate-seconds", "-1"])


def test_cutover_config_is_valid_for_the_real_loader() -> None:
    text = o.render_cutover_config(4002, 4000, "/tmp/p/cutover access.log")
    config = parse_config(yaml.safe_load(text), "bench.yaml", env={})
    assert config.listen == ("127.0.0.1", 4002)
    assert config.admin.listen is None
    assert config.access_log.enabled
    assert config.access_log.path == "/tmp/p/cutover access.log"
    backend = config.backends["origin"]
    assert (backend.host, backend.port) == ("127.0.0.1", 4000)
    assert backend.health is not None
    assert (backend.health.path, backend.health.interval) == ("/health.json", 5.0)
    (route,) = config.routes
    assert route.split == (("origin", 100),)


def test_fixed_rate_runs_for_one_worker_unless_told_otherwise() -> None:
    assert o._parse_args([]).fixed_rate_worker_counts == [1]
    assert o._parse_args(["--fixed-rate-workers", "1,2"]).fixed_rate_worker_counts == [1, 2]
    with pytest.raises(SystemExit):
        o._parse_args(["--fixed-rate-workers", "two"])


def test_parse_cpu_line_and_busy_share() -> None:
    text = (
        "cpu  10 0 10 100 0 0 0 0 0 0\n"
        "cpu0 1 2 3 40 5 6 7 8 0 0\n"
        "cpu1 100 0 50 300 10 5 20 15 0 0\n"
        "intr 1 2 3\n"
    )
    assert o.parse_cpu_line(text, 0) == (1 + 2 + 3 + 6 + 7, 19 + 40 + 5 + 8)
    assert o.parse_cpu_line(text, 1) == (175, 500)
    assert o.parse_cpu_line(text, 2) is None
    assert o.busy_share((175, 500), (275, 700)) == pytest.approx(0.5)
    assert o.busy_share((175, 500), (175, 500)) is None
    assert o.busy_share(None, (1, 2)) is None
    assert o.cpu_set("0,1") == {0, 1}
    assert o.cpu_set(None) is None


def test_tree_pids_walks_descendants() -> None:
    stats = {
        1: (0, 5, 5),
        10: (1, 1, 2),
        11: (10, 1, 2),
        12: (10, 1, 2),
        20: (1, 1, 2),
        30: (99, 1, 2),
    }
    assert sorted(o.tree_pids(stats, 10)) == [10, 11, 12]
    assert o.tree_pids(stats, 77) == []
    assert o.tree_ticks(stats, 10) == (3, 6)
    assert o.tree_ticks(stats, 77) is None


def test_access_log_p99_reads_cutovers_durations(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = [json.dumps({"status": 200, "duration_ms": d / 10}) for d in range(1, 101)]
    log.write_text("\n".join([*lines, "not json", '{"no": "duration"}']) + "\n")
    assert o.access_log_p99(log) == pytest.approx(9.9)
    assert o.access_log_p99(tmp_path / "missing.log") is None
    assert o.access_log_p99(None) is None


def test_pin_tree_moves_a_process_and_unpin_restores_it() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        before = os.sched_getaffinity(proc.pid)
        old = o.pin_tree(proc.pid, {cpus[-1]})
        assert os.sched_getaffinity(proc.pid) == {cpus[-1]}
        assert old[proc.pid] == before
        o.unpin(old)
        assert os.sched_getaffinity(proc.pid) == before
    finally:
        proc.kill()
        proc.wait()


def test_named_cpu_seconds_counts_processes_by_name() -> None:
    name = Path("/proc/self/comm").read_text().strip()
    sum(i * i for i in range(300_000))  # some CPU time of our own
    mine = os.times()
    assert o.named_cpu_seconds(name) >= mine.user + mine.system - 0.05
    assert o.named_cpu_seconds("no-such-process-name-") == 0.0


def test_fixed_rate_plot_needs_two_rates_and_draws_every_side(tmp_path: Path) -> None:
    one = o.summarize_fixed(sample_fixed_runs())
    assert o.render_fixed_plot(one[1], 1) is None
    assert o.write_fixed_plot(one, tmp_path / "B.md") is None
    low = [
        o.FixedRun(r.workers, r.round, r.side, replace(r.result, rate=510.0), share=0.15)
        for r in sample_fixed_runs()
    ]
    both = o.summarize_fixed([*sample_fixed_runs(), *low])
    svg = o.render_fixed_plot(both[1], 1)
    assert svg is not None and svg.startswith("<svg") and "<style>" in svg
    assert svg.count("<polyline") == 3  # direct, nginx, cutover
    assert ">direct<" in svg and ">nginx<" in svg and ">cutover<" in svg
    assert "p99 by offered rate, 1 worker" in svg
    assert o.write_fixed_plot(both, tmp_path / "B.md") == o.PLOT_PATH
    assert (tmp_path / o.PLOT_PATH).read_text().startswith("<svg")
    section = o.render_section(o.summarize(sample_runs()), META, (), both, o.PLOT_PATH)
    image = f"![p99 against the offered rate at a fixed schedule]({o.PLOT_PATH})"
    assert section.index("**510 requests/s**") < section.index(image)
    assert section.index(image) < section.index("#### 2 workers")


class _ClosesAfterFirstAnswer:
    """A server on 127.0.0.1 answering POST /post with the bench's reply; the first
    `closing` connections are closed right after their first answer (keep-alive advertised),
    as the nginx proxy sometimes does; later ones stay open."""

    def __init__(self, closing: int) -> None:
        self.closing = closing
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            close_early = self.connections <= self.closing
            with conn:
                conn.settimeout(5)
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    if b"\r\n\r\n" not in buf:
                        break
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buf) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    buf = buf[length:]
                    reply = o.POST_REPLY.encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply)
                    )
                    if close_early:
                        break

    def close(self) -> None:
        self.sock.close()


def test_post_check_starts_again_when_a_proxy_closes_a_kept_alive_connection() -> None:
    server = _ClosesAfterFirstAnswer(closing=2)
    try:
        o.check_post_reads(server.port, b'{"x": 1}', side="nginx")
        assert server.connections == 3  # two closed early, the third kept alive
    finally:
        server.close()


def test_post_check_gives_up_after_its_tries() -> None:
    server = _ClosesAfterFirstAnswer(closing=o.POST_CHECK_TRIES)
    try:
        with pytest.raises((ConnectionError, OSError)):
            o.check_post_reads(server.port, b'{"x": 1}', side="nginx")
    finally:
        server.close()


def test_the_origin_must_keep_its_connection_open() -> None:
    """The origin's check is what proves it reads every POST body: no second chance."""
    server = _ClosesAfterFirstAnswer(closing=1)
    try:
        with pytest.raises((ConnectionError, OSError)):
            o.check_post_reads(server.port, b'{"x": 1}', side="origin")
        assert server.connections == 1
    finally:
        server.close()
