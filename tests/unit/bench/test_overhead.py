"""The pure parts of bench/overhead.py: wrk parsing, medians and ratios, Markdown, configs.

No sockets, no wrk; nothing here is timed.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import yaml

from bench import overhead as o
from proxy.config import parse_config

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
                    runs.append(o.Run(workers, rnd, case.key, side, res))
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


def test_render_tables_show_ratios_goals_and_errors() -> None:
    text = o.render_tables(o.summarize(sample_runs()), rounds=3)
    assert "#### 1 worker (nginx proxy and cutover alike)" in text
    assert "#### 2 workers" in text
    assert "| GET small JSON | 0.10 (0.10\u20130.20) |" in text
    assert "≥ 0.5" in text and "≥ 0.7" in text
    assert "| GET small JSON | cutover | 3,400 | 2.00 ms | 20.0 ms | 0 |" in text
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
    "command": "python -m bench.overhead --rounds 3",
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
    assert "`python -m bench.overhead --rounds 3`" in section
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
    payload = json.loads(
        json.dumps(
            {
                "runs": [
                    {
                        "workers": r.workers,
                        "round": r.round,
                        "case": r.case,
                        "side": r.side,
                        "result": asdict(r.result),
                    }
                    for r in runs
                ]
            }
        )
    )
    assert o.runs_from_json(payload) == runs


def test_runs_from_json_reparses_the_raw_wrk_output() -> None:
    raw = {"workers": 1, "round": 0, "case": "small", "side": "cutover"}
    payload = {"runs": [dict(raw, result={}, wrk_output=WRK_CUTOVER)]}
    (run,) = o.runs_from_json(payload)
    assert run.result == o.parse_wrk(WRK_CUTOVER)


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
def test_proxy_conf(workers: int) -> None:
    conf = o.render_proxy_conf("/tmp/p", 4001, 4000, workers, "/tmp/p/proxy.log")
    assert balanced(conf)
    assert f"worker_processes {workers};" in conf
    assert "listen 127.0.0.1:4001;" in conf
    assert "server 127.0.0.1:4000;" in conf
    assert "keepalive 64;" in conf
    assert "proxy_http_version 1.1;" in conf
    assert 'proxy_set_header Connection "";' in conf
    assert "proxy_pass http://origin;" in conf
    assert "access_log /tmp/p/proxy.log combined;" in conf
    assert "0.0.0.0" not in conf


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
