"""errors: every ProxyError renders OpenAI's error shape with its status, type and code."""

from __future__ import annotations

from proxy.core import requestid
from proxy.core.errors import (
    InvalidRequest,
    ModelNotFound,
    NoProviderAvailable,
    ProxyError,
    RateLimited,
)


def test_the_body_is_openai_shaped_and_carries_the_request_id_when_there_is_one() -> None:
    error = InvalidRequest("'messages' is required", param="messages")
    assert error.status == 400
    assert error.body() == {"error": {"message": "'messages' is required",
                                      "type": "invalid_request_error", "param": "messages",
                                      "code": "invalid_request"}}  # fmt: skip
    token = requestid.REQUEST_ID.set("rid-7")
    try:
        assert ModelNotFound("model 'x' is not configured").body()["error"]["request_id"] == "rid-7"
    finally:
        requestid.REQUEST_ID.reset(token)


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert RateLimited("busy", retry_after_s=0.2).headers() == {"Retry-After": "1"}
    assert RateLimited("busy", retry_after_s=2.6).headers() == {"Retry-After": "3"}
    assert RateLimited("busy", retry_after_s=1).status == 429
    assert "Retry-After" not in NoProviderAvailable("all circuits open").headers()


def test_an_unexpected_error_is_a_500_api_error() -> None:
    body = ProxyError("internal error").body()["error"]
    assert (ProxyError.status, body["type"], body["code"]) == (500, "api_error", None)
