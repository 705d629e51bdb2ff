"""Keys as digests: plain and ``sha256:`` keys both match, nothing else does."""

from __future__ import annotations

import hashlib

import pytest

from proxy.api.auth import KeySet
from proxy.settings.config import AuthConfig, key_digest


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
    with pytest.raises(ValueError, match=r"auth\.admin_keys"):
        AuthConfig.model_validate({"api_keys": ["ok-key"], "admin_keys": [bad]})
