"""`cutover parity run` against two sample implementations with planted differences and noise."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from cutover.cli import main as cli_main
from cutover.parity.config import ParityConfig, load_parity_file
from cutover.parity.corpus import load_corpus
from cutover.parity.runner import replay
from tests.integration.parity_samples import NOISE, PLANTED, corpus_lines, samples

ROOT = Path(__file__).resolve().parents[2]


def write_corpus(tmp_path: Path, lines: list[bytes] | None = None) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\n".join(lines if lines is not None else corpus_lines()) + b"\n")
    return path


async def run_cli(*args: str) -> int:
    return await asyncio.to_thread(cli_main, ["parity", "run", *args])


def reported(report: dict[str, Any]) -> dict[str, set[str]]:
    return {e["endpoint"]: {f["field"] for f in e["fields"]} for e in report["endpoints"]}


async def test_report_names_every_planted_difference_and_none_of_the_noise(
    tmp_path: Path,
) -> None:
    corpus = write_corpus(tmp_path)
    async with samples() as (primary, candidate):
        code = await run_cli(
            "--primary", primary.url, "--candidate", candidate.url,
            "--corpus", str(corpus), "--report", str(tmp_path / "out"),
        )  # fmt: skip
    assert code == 1  # differences over the default limit of 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert reported(report) == PLANTED
    for e in report["endpoints"]:
        noise = {f["field"] for f in e["noise_fields"]}
        assert not noise & PLANTED[e["endpoint"]]
        assert e["diff_rate"] == 1.0
    # the noise was seen, and dismissed because the primary differs from itself as often
    alerts = next(e for e in report["endpoints"] if e["endpoint"] == "GET /alerts/{id}")
    assert {f["field"] for f in alerts["noise_fields"]} == NOISE - {"body:3"}
    version = next(e for e in report["endpoints"] if e["endpoint"] == "GET /version")
    assert {f["field"] for f in version["noise_fields"]} == {"body:3"}
    # kinds say what happened to each field
    kinds = {f["field"]: set(f["kinds"]) for f in alerts["fields"]}
    assert kinds == {"$.alertname": {"missing"}, "$.alert_name": {"extra"}, "$.count": {"type"}}
    history = next(e for e in report["endpoints"] if e["endpoint"] == "GET /history")
    assert history["fields"][0]["kinds"] == {"missing": 6}
    # side-by-side examples carry both bodies and the differing paths
    example = alerts["examples"][0]
    assert {d["path"] for d in example["differences"]} >= {"$.alertname", "$.count"}
    assert '"alert_name"' in example["candidate"]["body"]
    assert '"alertname"' in example["primary"]["body"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    for external in ("<script", "<link", "src=", "href='http", 'href="http', "url("):
        assert external not in page  # one self-contained page
    for endpoint, fields in PLANTED.items():
        assert endpoint in page
        for f in fields:
            assert f in page


async def test_identical_implementations_pass_and_noise_alone_is_not_a_difference(
    tmp_path: Path,
) -> None:
    corpus = write_corpus(tmp_path)
    async with samples() as (primary, _):
        code = await run_cli(
            "--primary", primary.url, "--candidate", primary.url,
            "--corpus", str(corpus), "--report", str(tmp_path / "out"),
        )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["passed"] is True
    assert all(e["fields"] == [] and e["diff_rate"] == 0.0 for e in report["endpoints"])


async def test_exit_code_gate_follows_max_diff_rate(tmp_path: Path) -> None:
    # /version differs on every request; /alerts on none once its differences are ignored.
    config = tmp_path / "parity.yaml"
    config.write_text("parity:\n  ignore: ['$.alertname', '$.alert_name', '$.count', '$.alerts']\n")
    lines = corpus_lines(alerts=6, history=2, version=0) + corpus_lines(0, 0, version=2)
    corpus = write_corpus(tmp_path, lines)
    common = ["--corpus", str(corpus), "--config", str(config)]
    async with samples() as (primary, candidate):
        sides = ["--primary", primary.url, "--candidate", candidate.url]
        over = await run_cli(*sides, *common, "--report", str(tmp_path / "a"))
        at_limit = await run_cli(*sides, *common, "--report", str(tmp_path / "b"),
                                 "--max-diff-rate", "1")  # fmt: skip
        in_percent = await run_cli(*sides, *common, "--report", str(tmp_path / "c"),
                                   "--max-diff-rate", "99%")  # fmt: skip
    assert (over, at_limit, in_percent) == (1, 0, 1)
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    rates = {e["endpoint"]: (e["diff_rate"], e["over_limit"]) for e in report["endpoints"]}
    assert rates == {
        "GET /version": (1.0, True),
        "GET /alerts/{id}": (0.0, False),
        "GET /history": (0.0, False),
    }


async def test_ignore_paths_and_tolerances_in_a_run(tmp_path: Path) -> None:
    """An ignored field is not reported; a timestamp tolerance turns noise into equality."""
    config = tmp_path / "parity.yaml"
    config.write_text(
        "parity:\n"
        "  ignore: [$.count, $..request_id]\n"
        "  tolerances: [{path: $.generated_at, timestamp: 1h}]\n"
    )
    corpus = write_corpus(tmp_path, corpus_lines(alerts=8, history=0, version=0))
    async with samples() as (primary, candidate):
        run = await replay(
            load_corpus(corpus),
            primary=primary.url,
            candidate=candidate.url,
            config=load_parity_file(config),
        )
    (alerts,) = run.stats()
    fields = {f.field: f for f in alerts.fields}
    assert {f.field for f in alerts.reported} == {"$.alertname", "$.alert_name"}
    assert "$.count" not in fields and "$.request_id" not in fields
    assert "$.generated_at" not in fields  # within the skew on both comparisons
    assert fields["$.tags[*]"].reported is False  # ordering noise, still learned


async def test_har_import_replays_the_same_requests(tmp_path: Path) -> None:
    har = {
        "log": {
            "version": "1.2",
            "entries": [
                {
                    "request": {
                        "method": "GET",
                        "url": f"https://app.example/alerts/{i}?x=1",
                        "headers": [
                            {"name": ":authority", "value": "app.example"},
                            {"name": "Host", "value": "app.example"},
                            {"name": "Accept", "value": "application/json"},
                        ],
                    }
                }
                for i in range(1, 5)
            ]
            + [
                {
                    "request": {
                        "method": "POST",
                        "url": "https://app.example/echo/x",
                        "headers": [],
                        "postData": {"mimeType": "application/json", "text": '{"a": 1}'},
                    }
                }
            ],
        }
    }
    path = tmp_path / "session.har"
    path.write_bytes(orjson.dumps(har))
    async with samples() as (primary, candidate):
        code = await run_cli(
            "--primary", primary.url, "--candidate", candidate.url,
            "--corpus", str(path), "--report", str(tmp_path / "out"),
        )  # fmt: skip
        seen = [h for h in primary.seen if "Accept" in h]
    assert code == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert reported(report) == {"GET /alerts/{id}": PLANTED["GET /alerts/{id}"]}
    assert report["requests"] == 4 and report["skipped"] == {"unsafe_method": 1}
    assert seen and all(h["Accept"] == "application/json" for h in seen)
    assert all(h["Host"] != "app.example" for h in primary.seen)


async def test_secondary_is_the_noise_source_when_given(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, corpus_lines(alerts=4, history=0, version=0))
    async with samples() as (primary, candidate), samples() as (secondary, _):
        run = await replay(
            load_corpus(corpus),
            primary=primary.url,
            candidate=candidate.url,
            secondary=secondary.url,
            config=ParityConfig(),
        )
        assert (primary.calls, secondary.calls, candidate.calls) == (4, 4, 4)
    assert run.noise_source == secondary.url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--primary", "ftp://x", "--candidate", "http://127.0.0.1:1"], "--primary"),
        (
            [
                "--primary",
                "http://127.0.0.1:1",
                "--candidate",
                "http://127.0.0.1:1",
                "--concurrency",
                "0",
            ],
            "--concurrency",
        ),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    corpus = write_corpus(tmp_path)
    assert cli_main(["parity", "run", *args, "--corpus", str(corpus)]) == 2
    assert message in capsys.readouterr().err


def test_bad_corpus_exit_2_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path, [b'{"method": "GET", "path": "/a"}', b'{"method": "GET"}'])
    code = cli_main(
        ["parity", "run", "--primary", "http://127.0.0.1:1", "--candidate",
         "http://127.0.0.1:1", "--corpus", str(corpus)]
    )  # fmt: skip
    assert code == 2
    assert f"{corpus}:2: path: expected a path" in capsys.readouterr().err


async def test_command_line_shows_progress_on_stderr(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, corpus_lines(alerts=3, history=0, version=0))
    async with samples() as (primary, candidate):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cutover", "parity", "run",
            "--primary", primary.url, "--candidate", candidate.url,
            "--corpus", str(corpus), "--report", str(tmp_path / "out"),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "parity: 3/3 requests" in err.decode()
    assert "FAIL GET /alerts/{id}: 3/3 differ" in out.decode()
    assert "report.html" in out.decode()
