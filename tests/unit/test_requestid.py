"""Request ids (which client ids are kept), the JSON log line carrying them, session cookies."""

from __future__ import annotations

import hashlib
import logging

import orjson

from proxy.api import session
from proxy.api.auth import KeySet
from proxy.core import requestid
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


def test_session_tokens_are_signed_expiring_and_not_the_key() -> None:
    token = session.make_token("admin-key", now=1000.0)
    assert "admin-key" not in token
    both, other, ours = KeySet(["other", "admin-key"]), KeySet(["other"]), KeySet(["admin-key"])
    assert session.is_valid(token, both, now=1000.0)
    assert not session.is_valid(token, other, now=1000.0)
    assert not session.is_valid(token, ours, now=1000.0 + session.LIFETIME_S + 1)
    expiry, signature = token.split(".")
    assert not session.is_valid(f"{int(expiry) + 1000}.{signature}", ours, now=1000.0)
    for junk in (None, "", "nodot", "x.y", ".", "12.", "-5.abc"):
        assert not session.is_valid(junk, ours, now=1000.0)
    # a key configured by its digest (sha256:<hex>) accepts the same sessions
    hashed = KeySet(["sha256:" + hashlib.sha256(b"admin-key").hexdigest()])
    assert session.is_valid(token, hashed, now=1000.0)
    assert not session.is_valid(token, KeySet([]), now=1000.0)
