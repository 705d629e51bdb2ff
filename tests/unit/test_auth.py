"""Keys as digests: plain and ``sha256:`` keys both match, nothing else does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from proxy.api.auth import KeySet, bearer_token
from proxy.core.errors import ConfigError
from proxy.settings.auth import AuthConfig, key_digest
from proxy.settings.config import parse_config

GOOD = "c2f1e0d9b8a7-client-key-4b3a"  # 29 characters, no placeholder word
MINIMAL = {
    "providers": {"a": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "models": {"m": {"providers": {"a": "m"}}},
}


def hashed(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def test_plain_and_hashed_keys_match_only_themselves() -> None:
    keys = KeySet(["alpha-key", hashed("beta-key"), hashed("gamma-key").upper()])
    assert keys.matches("alpha-key") and keys.matches("beta-key")
    assert not keys.matches("gamma-key")  # "SHA256:" upper-cased is not the hashed form
    assert keys.matches(hashed("gamma-key").upper())  # ... it is a plain key, itself
    for wrong in ("", "alpha-ke", "alpha-key ", "beta-key\x00", hashed("beta-key"), "β"):
        assert not keys.matches(wrong)


def test_an_empty_key_set_matches_nothing() -> None:
    empty = KeySet([])
    assert not empty and len(empty) == 0
    assert not empty.matches("") and not empty.matches("anything")


def test_hashed_key_digest_is_the_given_hex() -> None:
    assert key_digest(hashed("k")) == hashlib.sha256(b"k").digest()
    assert key_digest("k") == hashlib.sha256(b"k").digest()


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "g" * 64, "SHA256:" + "0" * 63])
def test_a_malformed_hashed_key_is_a_config_error(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        AuthConfig.model_validate({"api_keys": [bad]})
    with pytest.raises(ValueError, match=r"admin_keys"):
        AuthConfig.model_validate({"api_keys": [GOOD], "admin_keys": [bad]})


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        (" " + GOOD, "white space"),
        ("short-key-1234", "has 14 characters; a key needs at least 24"),
        ("replace-me-with-a-real-key-please", "placeholder"),
        ("CHANGEME-CHANGEME-CHANGEME-0001", "placeholder"),
        ("your_api_key_here_0123456789", "placeholder"),
        ("a" * 40, "placeholder"),
        (hashed(""), "digest of an empty or placeholder key"),
        (hashed("replace-me"), "digest of an empty or placeholder key"),
    ],
)
def test_unusable_keys_are_refused_naming_the_field_never_the_key(key: str, reason: str) -> None:
    for field in ("api_keys", "admin_keys"):
        auth = {"api_keys": [GOOD + "-other"], field: [GOOD + "-x", key]}
        with pytest.raises(ConfigError) as info:
            parse_config({**MINIMAL, "auth": auth}, Path("c.yaml"))
        text = str(info.value)
        assert text.startswith(f"c.yaml: auth.{field}: the key at index 1 ") and reason in text
        if key.strip():
            assert key.strip() not in text


def test_a_key_in_both_lists_is_refused() -> None:
    with pytest.raises(ValueError, match="share a key"):
        AuthConfig.model_validate({"api_keys": [GOOD], "admin_keys": [GOOD]})
    with pytest.raises(ValueError, match="share a key"):  # the same key, once as a digest
        AuthConfig.model_validate({"api_keys": [GOOD], "admin_keys": [hashed(GOOD)]})


def test_random_keys_pass() -> None:
    import secrets

    for _ in range(200):
        keys = [secrets.token_urlsafe(24), secrets.token_hex(16), hashed(secrets.token_hex(4))]
        AuthConfig.model_validate({"api_keys": keys})


def test_an_empty_or_blank_presented_key_is_no_key() -> None:
    from starlette.requests import Request

    def token(*headers: tuple[bytes, bytes]) -> str | None:
        return bearer_token(Request({"type": "http", "headers": list(headers)}))

    assert token((b"api-key", b"")) is None
    assert token((b"api-key", b"  ")) is None
    assert token((b"authorization", b"Bearer \xa0")) is None  # latin-1: a no-break space
    assert token((b"authorization", b"Bearer ")) is None
    assert token((b"authorization", b"Bearer  k ")) == "k"
    assert token((b"api-key", b" k ")) == "k"
    assert not KeySet([GOOD]).matches("")


def test_auth_is_required_and_open_mode_binds_only_to_loopback() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: \(top level\): auth: required"):
        parse_config(MINIMAL, Path("c.yaml"))
    open_auth = {"allow_unauthenticated": True}
    config = parse_config({**MINIMAL, "auth": open_auth}, Path("c.yaml"))
    assert config.auth.is_open and config.server.host == "127.0.0.1"
    for host in ("0.0.0.0", "::", "10.1.2.3", "router.internal"):
        with pytest.raises(ConfigError, match=r"auth\.allow_unauthenticated: refused on host"):
            parse_config({**MINIMAL, "auth": open_auth, "server": {"host": host}}, Path("c.yaml"))
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        parse_config({**MINIMAL, "auth": open_auth, "server": {"host": host}}, Path("c.yaml"))
    keyed = parse_config({**MINIMAL, "auth": {"api_keys": [GOOD]}, "server": {"host": "::"}},
                         Path("c.yaml"))  # fmt: skip
    assert not keyed.auth.is_open
