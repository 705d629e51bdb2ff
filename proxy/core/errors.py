"""The one error tree of the proxy, rooted at `TtftRouterError`.

`ProxyError` and its subclasses are what a client is told: each knows its HTTP status,
OpenAI type and code, and the log level it deserves; `api` renders every one as
`{"error": {...}}`. The other branches stay inside the proxy and are defined where they are
raised, under the same root: `ConfigError` (here), `learning.store.base.StoreUnavailable`,
`upstream.base.UpstreamFailure`, `probing.prober.BudgetExhausted`,
`method.plan.BenchError`, `method.plots.PlotsUnavailable`.

Nothing here does I/O. Foreign exceptions (aiohttp, litellm, redis) are translated into
these or into `Outcome`s at their own boundary, never here.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

from proxy.core import requestid


class TtftRouterError(Exception):
    """The root of every exception the proxy defines."""


class ProxyError(TtftRouterError):
    status: int = 500  # a class default; an instance may mirror an upstream's status
    type: ClassVar[str] = "api_error"
    code: ClassVar[str | None] = None
    log_level: ClassVar[int] = logging.ERROR

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        error = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        request_id = requestid.current()
        if request_id is not None:
            error["request_id"] = request_id  # the response's x-request-id, to quote
        return {"error": error}


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    log_level = logging.INFO


class AuthenticationFailed(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    log_level = logging.INFO


class PermissionDenied(ProxyError):
    status = 403
    type = "permission_error"
    code = "permission_denied"
    log_level = logging.INFO


class ModelNotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    log_level = logging.INFO


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    log_level = logging.INFO


class MethodNotAllowed(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"
    log_level = logging.INFO

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"
    log_level = logging.INFO


class RateLimited(ProxyError):
    """Every candidate answered 429; `retry_after_s` is the soonest any of them frees up."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    log_level = logging.WARNING

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class ClientRateLimited(ProxyError):
    """A client is over one of its own rate limits (proxy.clients): OpenAI's 429, whose
    `type` names what ran out ("requests" or "tokens"), with Retry-After (and OpenAI's
    `retry-after-ms`) and the x-ratelimit-* headers of the client's limits."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"
    log_level = logging.INFO

    def __init__(
        self, message: str, *, kind: str, retry_after_s: float, headers: dict[str, str]
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s
        self._headers = headers

    def headers(self) -> dict[str, str]:
        wait_s = max(self.retry_after_s, 0.001)
        return {
            "Retry-After": str(max(1, math.ceil(wait_s))),
            "retry-after-ms": str(max(1, math.ceil(wait_s * 1000))),
            **self._headers,
        }

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["type"] = self.kind
        return body


class QuotaExceeded(ProxyError):
    """A client spent its budget (proxy.clients): OpenAI's 429 `insufficient_quota`, which
    waiting a few seconds does not cure (`x-should-retry: false` tells the openai SDK)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    log_level = logging.INFO

    def __init__(self, message: str, *, resets_in_s: float, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.resets_in_s = resets_in_s
        self._headers = headers

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.resets_in_s))),
                "x-should-retry": "false", **self._headers}  # fmt: skip


class UpstreamRejected(ProxyError):
    """The provider refused the request as malformed (400/422): the client's to fix."""

    type = "invalid_request_error"
    code = "upstream_rejected"
    log_level = logging.INFO

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class NoProviderAvailable(ProxyError):
    """Every provider of the model is out (open circuits, policy); `retry_after_s` is when
    asking again can succeed (a circuit's next trial), sent as Retry-After."""

    status = 503
    type = "service_unavailable_error"
    code = "no_provider_available"
    log_level = logging.WARNING

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class ServiceUnavailable(ProxyError):
    """Something the answer needs cannot be reached right now (the store's decision log)."""

    status = 503
    type = "service_unavailable_error"
    code = "store_unavailable"
    log_level = logging.WARNING


class UpstreamFailed(ProxyError):
    """Every candidate failed before its first token, not all with 429."""

    status = 502
    type = "api_error"
    code = "upstream_failed"
    log_level = logging.WARNING


class AnswerTooLarge(ProxyError):
    """A provider's answer passed what the proxy holds in memory for one request."""

    status = 502
    type = "api_error"
    code = "answer_too_large"
    log_level = logging.WARNING


class UpstreamTimeout(ProxyError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"
    log_level = logging.WARNING


class ConfigError(TtftRouterError):
    """A config or policy file is invalid. The message names file, field path and reason."""
