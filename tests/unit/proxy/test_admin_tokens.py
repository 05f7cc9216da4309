"""Named admin tokens: `admin.tokens` validation, constant-time matching, the actor they name."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from cutover.core.config_model import AdminConfig
from cutover.core.configkit import ConfigError, ConfigErrors, format_errors
from cutover.core.errors import CutoverError, render
from cutover.proxy import admin as admin_mod
from cutover.proxy.admin import actor, actor_of, authenticate, match_token, require_admin_token
from cutover.proxy.config import parse_config
from cutover.proxy.config_view import to_json

ALICE = "alice-0123456789abcdef"
BOT = "deploy-bot-fedcba9876543210"
SHARED = "shared-token-for-everyone"

MINIMAL: dict[str, Any] = {
    "backends": {"go": "http://go:8080", "python": "http://python:8080"},
    "routes": [{"name": "default", "split": {"go": 90, "python": 10}}],
}


def _config(admin: object, env: dict[str, str] | None = None) -> AdminConfig:
    return parse_config({**MINIMAL, "admin": admin}, "test.yaml", env=env or {}).admin


def _errors(admin: object, env: dict[str, str] | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_config({**MINIMAL, "admin": admin}, "test.yaml", env=env or {})
    return info.value.errors


def _text(errors: list[ConfigError]) -> str:
    return format_errors(ConfigErrors(errors))


def test_named_tokens_from_the_environment() -> None:
    env = {"ALICE_TOKEN": ALICE, "BOT_TOKEN": BOT}
    admin = _config(
        {"tokens": {"alice": "${ALICE_TOKEN}", "deploy-bot": "${BOT_TOKEN}"}, "token": SHARED},
        env,
    )
    assert dict(admin.tokens) == {"alice": ALICE, "deploy-bot": BOT}
    assert admin.token == SHARED
    assert admin.credentials() == (("admin", SHARED), ("alice", ALICE), ("deploy-bot", BOT))
    assert _config({}).credentials() == ()


def test_named_tokens_alone_allow_a_non_loopback_listener() -> None:
    admin = _config({"listen": "0.0.0.0:9901", "tokens": {"alice": ALICE}})
    assert admin.listen == ("0.0.0.0", 9901) and admin.token is None
    (err,) = _errors({"listen": "0.0.0.0:9901", "tokens": {}})
    assert err.path == "admin.token" and "admin.tokens" in err.expected
    assert "loopback" in err.expected


@pytest.mark.parametrize(
    ("tokens", "path", "expected"),
    [
        ({"bad name": ALICE}, "admin.tokens['bad name']", "letters, digits"),
        ({"": ALICE}, "admin.tokens['']", "letters, digits"),
        ({"a/b": ALICE}, "admin.tokens['a/b']", "letters, digits"),
        ({"alice": "short-secret"}, "admin.tokens.alice", "at least 16 characters"),
        ({"alice": ""}, "admin.tokens.alice", "at least 16 characters (it is empty)"),
        ({"alice": None}, "admin.tokens.alice", "at least 16 characters (it is empty)"),
        ({"alice": 1234567890123456789}, "admin.tokens.alice", "(quote it)"),
        ({"alice": "with space 0123456789"}, "admin.tokens.alice", "without spaces"),
        ({"alice": ALICE, "bob": ALICE}, "admin.tokens.bob", "different from alice's"),
    ],
)
def test_invalid_named_tokens_say_what_was_expected(
    tokens: dict[Any, Any], path: str, expected: str
) -> None:
    errors = _errors({"tokens": tokens})
    assert [e.path for e in errors] == [path], _text(errors)
    assert expected in errors[0].expected
    for value in tokens.values():  # the token itself is never shown
        if isinstance(value, str) and value:
            assert value not in _text(errors)


def test_a_token_from_an_empty_variable_is_refused_without_showing_others() -> None:
    errors = _errors({"tokens": {"alice": "${ALICE_TOKEN}", "bob": ALICE}}, {"ALICE_TOKEN": ""})
    assert [e.path for e in errors] == ["admin.tokens.alice"]
    assert ALICE not in _text(errors)


def test_tokens_must_be_a_mapping_and_a_string_is_not_echoed() -> None:
    (err,) = _errors({"tokens": ALICE})
    assert err.path == "admin.tokens" and "mapping of token name to token" in err.expected
    assert ALICE not in str(err)
    (err,) = _errors({"tokens": [ALICE]})
    assert ALICE not in str(err)


def test_shared_and_named_tokens_must_differ_and_not_share_the_name() -> None:
    errors = _errors({"token": ALICE, "tokens": {"alice": ALICE}})
    assert [e.path for e in errors] == ["admin.tokens.alice"]
    assert "different from admin.token's" in errors[0].expected
    assert ALICE not in _text(errors)
    errors = _errors({"token": SHARED, "tokens": {"admin": ALICE}})
    assert [e.path for e in errors] == ["admin.tokens.admin"]
    assert "a name other than 'admin'" in errors[0].expected
    # Without the shared token the name is free.
    assert dict(_config({"tokens": {"admin": ALICE}}).tokens) == {"admin": ALICE}


def test_secrets_stay_out_of_repr_and_the_config_view() -> None:
    admin = _config({"token": SHARED, "tokens": {"alice": ALICE, "deploy-bot": BOT}})
    for text in (repr(admin), str(to_json(admin))):
        for secret in (SHARED, ALICE, BOT):
            assert secret not in text
    assert to_json(admin)["tokens"] == "<redacted>"


def test_match_token_compares_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = (("admin", SHARED), ("alice", ALICE), ("deploy-bot", BOT))
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a) + len(b))
        return real(a, b)

    monkeypatch.setattr(admin_mod.hmac, "compare_digest", counting)
    assert match_token(ALICE, creds) == "alice"
    assert len(calls) == 3  # no early exit on the match
    assert len(set(calls)) == 1  # equal-length digests, whatever the tokens' lengths
    calls.clear()
    assert match_token("nope", creds) is None and len(calls) == 3
    assert match_token(ALICE[:-1], creds) is None
    assert match_token("", creds) is None


def _request(headers: dict[str, str]) -> Any:
    return make_mocked_request("POST", "/admin/rollback", headers=headers)


def test_authenticate_names_the_token() -> None:
    admin = AdminConfig(token=SHARED, tokens={"alice": ALICE, "deploy-bot": BOT})  # type: ignore[arg-type]
    assert authenticate(_request({"Authorization": f"Bearer {BOT}"}), admin) == (
        True,
        "deploy-bot",
    )
    assert authenticate(_request({"Authorization": f"bearer  {ALICE} "}), admin) == (
        True,
        "alice",
    )
    assert authenticate(_request({"Authorization": f"Bearer {SHARED}"}), admin) == (True, "admin")
    assert authenticate(_request({"Authorization": f"Basic {ALICE}"}), admin) == (False, None)
    assert authenticate(_request({"Authorization": "Bearer wrong"}), admin) == (False, None)
    assert authenticate(_request({}), admin) == (False, None)
    assert authenticate(_request({}), AdminConfig()) == (True, None)


def test_actor_trusts_the_token_not_the_header() -> None:
    assert actor("alice", "mallory") == "operator:alice"
    assert actor("alice", None) == "operator:alice"
    assert actor("admin", "bob") == "operator:admin (self-declared: bob)"
    assert actor("admin", "not valid!") == "operator:admin"
    assert actor(None, "bob") == "operator (self-declared: bob)"
    assert actor(None, None) == "operator"


class _Gw:
    def __init__(self, admin: AdminConfig) -> None:
        self.config = type("C", (), {"admin": admin})()


def test_require_admin_token_accepts_named_tokens_and_records_the_actor() -> None:
    gw = _Gw(AdminConfig(tokens={"alice": ALICE}))  # type: ignore[arg-type]
    ok = _request({"Authorization": f"Bearer {ALICE}", "X-Cutover-Actor": "mallory"})
    assert require_admin_token(ok, gw) is None  # type: ignore[arg-type]
    assert actor_of(ok) == "operator:alice"
    with pytest.raises(CutoverError) as caught:
        require_admin_token(_request({"Authorization": "Bearer x"}), gw)  # type: ignore[arg-type]
    denied = render(caught.value, None)
    assert denied.status == 401
    assert ALICE.encode() not in denied.body  # type: ignore[operator]


@pytest.mark.parametrize(
    ("value", "carries"),
    [
        (f"Bearer {SHARED}", True),
        (f"bearer {SHARED}", True),
        (f"BEARER   {SHARED}  ", True),
        (f" Bearer {ALICE}", True),
        (f"Bearer {SHARED}x", False),
        (f"Basic {SHARED}", False),
        (SHARED, False),
        ("Bearer", False),
        ("", False),
    ],
)
def test_carries_admin_token(value: str, carries: bool) -> None:
    authorizations = admin_mod._authorizations((("admin", SHARED), ("alice", ALICE)))
    assert authorizations == {f"Bearer {SHARED}", f"Bearer {ALICE}"}
    assert admin_mod.carries_admin_token(value, authorizations) is carries
    assert admin_mod.carries_admin_token(value, frozenset()) is False
