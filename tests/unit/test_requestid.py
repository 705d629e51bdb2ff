"""Request ids (which client ids are kept), the JSON log line carrying them, session cookies."""

from __future__ import annotations

import hashlib
import logging

import orjson
import pytest

from proxy.api.session import SECRET_NAME, Sessions, _sign
from proxy.core import requestid
from proxy.core.errors import RateLimited
from proxy.learning.store.memory import MemoryStore
from proxy.settings.config import MemoryStoreConfig
from proxy.telemetry.logs import JsonFormatter


def test_a_safe_client_id_is_kept_anything_else_replaced() -> None:
    assert requestid.from_headers([(b"x-request-id", b"abc-DEF_1.2")]) == "abc-DEF_1.2"
    assert requestid.from_headers([(b"X-Request-Id", b"upper-name")]) == "upper-name"
    assert requestid.from_headers([(b"x-request-id", b"a" * 128)]) == "a" * 128
    for unsafe in (b"a" * 129, b"", b"has space", b"semi;colon", b"new\nline", "é".encode()):
        made = requestid.from_headers([(b"x-request-id", unsafe)])
        assert made != unsafe.decode("utf-8", "replace") and len(made) == 24
    made = requestid.from_headers([(b"host", b"x")])
    assert len(made) == 24 and made != requestid.from_headers([])


def test_json_log_lines_carry_the_request_id_while_it_is_set() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    assert "request_id" not in orjson.loads(formatter.format(record))
    token = requestid.REQUEST_ID.set("rid-1")
    try:
        line = orjson.loads(formatter.format(record))
    finally:
        requestid.REQUEST_ID.reset(token)
    assert line["request_id"] == "rid-1" and line["msg"] == "hello x"


async def test_session_tokens_are_random_signed_capped_and_revocable() -> None:
    store = MemoryStore(MemoryStoreConfig())
    sessions = Sessions(store, 3600.0, "auto")
    token = await sessions.create(now=1000.0)
    found = await sessions.verify(token, now=1000.0)
    assert found is not None and found.expiry == 4600
    assert await sessions.verify(token, now=4601.0) is None  # expired
    version, sid, expiry, signature = token.split(".")
    # a later expiry, even correctly signed, is past the lifetime cap
    secret = (await store.get_value(SECRET_NAME)) or b""
    long_lived = f"v1.{sid}.99999999999.{_sign(secret, sid, 99999999999)}"
    assert await sessions.verify(long_lived, now=1000.0) is None
    # the old scheme: HMAC keyed by the admin key's SHA-256 (what a sha256: entry publishes)
    digest = hashlib.sha256(b"admin-key-0123456789abcdefgh").digest()
    assert await sessions.verify(f"v1.{sid}.{expiry}.{_sign(digest, sid, 4600)}", 1000.0) is None
    for junk in (None, "", "v1", "v1.a.b.c", "v1.a.-5.c", "v1.é.4600.x", "v2.a.4600.b",
                 f"{version}.{sid}.{expiry}.{signature}\u00e9", "x" * 10_000):  # fmt: skip
        assert await sessions.verify(junk, now=1000.0) is None
    # another replica, sharing the store, accepts it; a revocation voids it for both
    other = Sessions(store, 3600.0, "auto")
    assert await other.verify(token, now=1000.0) is not None
    await sessions.revoke(found, now=1000.0)
    assert await other.verify(token, now=1000.0) is None
    assert await sessions.verify(token, now=1000.0) is None


def test_the_login_rate_limit_counts_failures_per_address_and_in_all() -> None:
    sessions = Sessions(MemoryStore(MemoryStoreConfig()), 3600.0, "auto")
    for _ in range(5):
        sessions.check_login_rate("10.0.0.1", now=100.0)
        sessions.note_login_failure("10.0.0.1", now=100.0)
    with pytest.raises(RateLimited):
        sessions.check_login_rate("10.0.0.1", now=101.0)
    sessions.check_login_rate("10.0.0.2", now=101.0)  # another address: not yet
    sessions.check_login_rate("10.0.0.1", now=161.0)  # a minute later: again
    for i in range(30):
        sessions.note_login_failure(f"10.1.0.{i}", now=200.0)
    with pytest.raises(RateLimited):
        sessions.check_login_rate("10.2.0.1", now=200.0)  # too many from everywhere
