"""Redaction: secrets, credential shapes and addresses out of text others read or log."""

from __future__ import annotations

import io
import logging

from proxy.upstream.redact import REDACTED, LogRedaction, Redactor

SECRET = "configured-provider-key-123"


def test_secrets_credential_shapes_and_addresses() -> None:
    redact = Redactor([SECRET, "short"], {"10.0.0.7:8443": "provider p"})
    text = (
        f"key {SECRET} Bearer abc.def sk-live1234567890abcdef https://u:pw@host/x "
        "at 10.0.0.7:8443 and 192.168.1.2:99 ('172.16.0.1', 443) short"
    )
    out = redact(text)
    for leaked in (SECRET, "abc.def", "sk-live", "u:pw", "10.0.0.7", "192.168", "172.16"):
        assert leaked not in out, out
    assert "provider p" in out and "<address>" in out
    assert "short" in out  # under the minimum length: would redact ordinary words


def test_operator_log_keeps_ips_but_not_secrets() -> None:
    redact = Redactor([SECRET], {}, hide_ips=False)
    assert redact(f"{SECRET} from 10.1.2.3:80") == f"{REDACTED} from 10.1.2.3:80"


def test_log_filter_redacts_arguments_and_exception_text() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LogRedaction(Redactor([SECRET], {}, hide_ips=False)))
    logger = logging.getLogger("test_redact_filter")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("upstream said %s", f"Incorrect API key {SECRET}")
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert SECRET not in out
    assert out.count(REDACTED) == 2 and "RuntimeError" in out


def test_only_error_events_are_rewritten_and_their_strings_decoded() -> None:
    redact = Redactor([SECRET], {})
    content = b'data: {"choices":[{"delta":{"content":"token=abc \\"error\\""}}]}\n\n'
    escaped = SECRET.replace("-", "\\u002d")
    error = b'event: error\ndata: {"type":"error","message":"bad ' + escaped.encode() + b'"}\n\n'
    out = redact.bytes(content + error + b"data: [DONE]\n\n")
    assert out.startswith(content) and out.endswith(b"data: [DONE]\n\n")
    assert SECRET.encode() not in out and b"\\u002d" not in out and REDACTED.encode() in out
    assert b"event: error\ndata: " in out
    body = redact.bytes(b'{"error": {"message": "key ' + escaped.encode() + b'"}}')
    assert b"key [redacted]" in body


def test_english_is_not_a_credential() -> None:
    redact = Redactor([], {}, hide_ips=False)
    for text in ("stream broke after first token: ticker on t", "max tokens: 10",
                 "12:30:45 UTC", "std::vector"):  # fmt: skip
        assert redact(text) == text
