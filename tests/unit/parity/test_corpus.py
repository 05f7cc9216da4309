"""Corpus files: JSONL (also the capture format), HAR, and errors naming the line and field."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from cutover.parity.corpus import (
    CorpusError,
    CorpusRequest,
    load_corpus,
    parse_jsonl,
    redact_json,
    redact_query,
    to_line,
)
from cutover.parity.diff import compile_pattern


def test_jsonl_fields() -> None:
    lines = [
        '{"method": "get", "path": "/history?limit=10"}',
        "",
        "# a comment",
        '{"method": "POST", "path": "/webhook", "headers": {"Content-Type": "application/json",'
        ' "X-A": ["1", "2"]}, "body": "{\\"alerts\\": []}"}',
        '{"method": "PUT", "path": "/b", "body_b64": "'
        + base64.b64encode(b"\xff\x00").decode()
        + '", "ts": 1.5, "route": "default"}',
    ]
    a, b, c = parse_jsonl(lines)
    assert a == CorpusRequest("GET", "/history?limit=10")
    assert b.headers == (("Content-Type", "application/json"), ("X-A", "1"), ("X-A", "2"))
    assert b.body == b'{"alerts": []}'
    assert c.body == b"\xff\x00"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "corpus:1: expected one JSON object per line"),
        ("[1]", "corpus:1: expected a JSON object"),
        ('{"path": "/a"}', "corpus:1: method: expected an HTTP method"),
        ('{"method": "GET", "path": "a"}', "corpus:1: path: expected a path"),
        ('{"method": "GET", "path": "/a", "bdy": "x"}', "corpus:1: unknown field 'bdy'"),
        ('{"method": "GET", "path": "/a", "body": "x", "body_b64": "eA=="}', "at most one"),
        ('{"method": "GET", "path": "/a", "body_b64": "%%"}', "body_b64: expected base64"),
        ('{"method": "GET", "path": "/a", "headers": {"A": 1}}', "headers.A: expected"),
        ('{"method": "GET", "path": "/a", "body": 5}', "body: expected UTF-8 text"),
    ],
)
def test_jsonl_errors(line: str, message: str) -> None:
    with pytest.raises(CorpusError, match=message.replace("(", r"\(")):
        parse_jsonl([line])


def test_capture_lines_read_back(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        to_line("GET", "/a?b=1", [("X-A", "1"), ("X-A", "2")], None, ts=1.0, route="r")
        + to_line("POST", "/b", {"Content-Type": "text/plain"}, b"hi")
        + to_line("POST", "/c", {}, b"\xff")
    )
    a, b, c = load_corpus(path)
    assert a == CorpusRequest("GET", "/a?b=1", (("X-A", "1"), ("X-A", "2")))
    assert b.body == b"hi" and c.body == b"\xff"


def test_har(tmp_path: Path) -> None:
    har = {
        "log": {
            "entries": [
                {
                    "request": {
                        "method": "POST",
                        "url": "https://svc.example:8443/api/x?y=1",
                        "headers": [
                            {"name": ":method", "value": "POST"},
                            {"name": "Host", "value": "svc.example"},
                            {"name": "Content-Length", "value": "7"},
                            {"name": "Authorization", "value": "Bearer t"},
                        ],
                        "postData": {"mimeType": "application/json", "text": '{"a":1}'},
                    }
                },
                {
                    "request": {
                        "method": "PUT",
                        "url": "http://svc.example/bin",
                        "postData": {"text": "/w==", "encoding": "base64"},
                    }
                },
            ]
        }
    }
    path = tmp_path / "x.har"
    path.write_bytes(orjson.dumps(har))
    a, b = load_corpus(path)
    assert a.method == "POST" and a.path == "/api/x?y=1"
    assert a.headers == (("Authorization", "Bearer t"), ("Content-Type", "application/json"))
    assert a.body == b'{"a":1}'
    assert b.body == b"\xff" and b.path == "/bin"
    other = tmp_path / "x.json"  # detected by content too
    other.write_bytes(orjson.dumps(har))
    assert load_corpus(other) == [a, b]


def test_har_errors_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "x.har"
    path.write_bytes(orjson.dumps({"log": {"entries": [{"request": {"method": "GET"}}]}}))
    with pytest.raises(CorpusError, match=r"log.entries\[0\].request.url: expected a URL"):
        load_corpus(path)
    path.write_text("{not json")
    with pytest.raises(CorpusError, match="expected a HAR"):
        load_corpus(path)
    with pytest.raises(CorpusError, match="cannot read"):
        load_corpus(tmp_path / "absent.jsonl")


def test_redaction() -> None:
    patterns = [compile_pattern("$..password"), compile_pattern("$.user.token")]
    data = {"user": {"token": "t", "name": "n", "x": [{"password": "p"}]}, "password": "q"}
    assert redact_json(data, patterns) == {
        "user": {"token": "<redacted>", "name": "n", "x": [{"password": "<redacted>"}]},
        "password": "<redacted>",
    }
    assert redact_query("/a?api_key=1&limit=5&access_token=x&flag") == (
        "/a?api_key=%3Credacted%3E&limit=5&access_token=%3Credacted%3E&flag"
    )
    assert redact_query("/a") == "/a"
