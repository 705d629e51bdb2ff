"""What every upstream client offers dispatch, and the one failure type it may raise.

An upstream opens one request to one provider and yields a response whose body is read as
raw bytes (SSE for streams). Foreign exceptions (aiohttp, litellm) never leave `upstream/`:
they become `UpstreamFailure`, carrying the `Outcome` that the sample will record.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import orjson

from proxy.core.domain import Outcome
from proxy.core.errors import TtftRouterError
from proxy.upstream.redact import Redactor

# Bytes of a provider's error body kept (what a message is looked for in), and read: more
# than kept, so that a secret across the cut is redacted before the cut.
MAX_ERROR_BODY = 4096
MAX_ERROR_READ = 2 * MAX_ERROR_BODY
# Bytes of one answer held in memory: a stream=false answer (its stream, or its body) and
# one server-sent event; past them, the answer is refused (502 answer_too_large).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
MAX_EVENT_BYTES = MAX_ANSWER_BYTES


class UpstreamFailure(TtftRouterError):
    """An attempt failed at the transport level or with a non-2xx status.

    `message` and `body` may quote the provider's own text, which can hold a credential or an
    internal address: whatever shows them to anyone else uses `redacted()` first.
    """

    def __init__(
        self,
        outcome: Outcome,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.body = body

    def redacted(self, redact: Redactor) -> UpstreamFailure:
        """A copy whose message and body others may read (see proxy.upstream.redact): secrets go
        before the text is cut, so no part of a secret is left at the cut."""
        body = redact.bytes(self.body)[:MAX_ERROR_BODY]
        return UpstreamFailure(
            self.outcome, redact.provider_text(self.message), status=self.status,
            retry_after_s=self.retry_after_s, body=body,
        )  # fmt: skip


class UpstreamResponse(Protocol):
    status: int

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Raises UpstreamFailure if the connection breaks."""
        ...

    async def read(self) -> bytes:
        """The whole body. Raises UpstreamFailure if the connection breaks."""
        ...


class Upstream(Protocol):
    def open(
        self, path: str, body: bytes, *, stream: bool
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """Send one request (`path` like "/chat/completions", `body` JSON with the provider's
        model id). Entering raises UpstreamFailure for transport errors and for any
        non-2xx status (with the status, Retry-After and the error body); leaving closes the
        connection, aborting the upstream request if the body was not fully read."""
        ...

    async def close(self) -> None: ...


# An error's `code` that says the request is at fault whatever the provider (OpenAI's codes;
# others send type invalid_request_error, which counts the same unless the code is below).
REQUEST_ERROR_CODES = frozenset(
    ("context_length_exceeded", "content_filter", "invalid_prompt", "string_above_max_length",
     "invalid_image_url", "invalid_value", "unsupported_parameter", "unsupported_value",
     "invalid_type", "missing_required_parameter")
)  # fmt: skip
# ... and codes of type invalid_request_error that are the deployment's, not the request's.
DEPLOYMENT_ERROR_CODES = frozenset(
    ("model_not_found", "invalid_api_key", "insufficient_quota", "rate_limit_exceeded")
)


def error_object(payload: object) -> dict[str, object] | None:
    """The error object of a provider's error body or event: OpenAI's `{"error": {...}}`,
    a Responses `response.failed` event's `response.error`, or an `error` event itself."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        return error
    response = payload.get("response")
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        found: dict[str, object] = response["error"]
        return found
    return payload if payload.get("type") == "error" else None


# What a provider's error says of its own deployment whatever its status or type: the key,
# the account's billing or quota, a model it does not have.
_DEPLOYMENT_WORDS = re.compile(
    r"(?i)credit balance|billing|quota|api[ _-]?key|not authori[sz]ed|permission denied|"
    r"deactivated|model\b.{0,80}\b(?:does not exist|not found|not available)"
)


def _code(error: dict[str, object]) -> str | None:
    code = error.get("code")
    return code if isinstance(code, str) else None


def blames_deployment(error: dict[str, object] | None) -> bool:
    """Whether a provider's error object says the fault is its deployment's (its key, its
    account's billing or quota, a model it lacks), whatever the status it came with."""
    if error is None:
        return False
    if _code(error) in DEPLOYMENT_ERROR_CODES or error.get("param") == "model":
        return True
    message = error.get("message")
    return isinstance(message, str) and _DEPLOYMENT_WORDS.search(message[:1000]) is not None


def blames_request(error: dict[str, object] | None) -> bool:
    """Whether a provider's error object says the request is at fault (malformed, too long,
    filtered), not the provider: by its code, else its type; never when it blames the
    deployment."""
    if error is None or blames_deployment(error):
        return False
    return _code(error) in REQUEST_ERROR_CODES or error.get("type") == "invalid_request_error"


def event_failure(event: dict[str, object], outcome: Outcome, where: str) -> UpstreamFailure:
    """A provider's error event as a failure: the request's fault (as a 400 would be) when
    the error says so (`blames_request`), else `outcome` (the provider's)."""
    raw = orjson.dumps(event)
    message = f"error event {where}: {raw.decode()}"  # redacted by whoever shows it
    if blames_request(error_object(event)):
        return UpstreamFailure(Outcome.HTTP_4XX, message, status=400, body=raw)
    return UpstreamFailure(outcome, message, body=raw)


def outcome_for_status(status: int) -> Outcome:
    if status == 429:
        return Outcome.RATE_LIMITED
    if status >= 500:
        return Outcome.HTTP_5XX
    return Outcome.HTTP_4XX


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def status_failure(status: int, body: bytes, retry_after: str | None) -> UpstreamFailure:
    # The whole text read: it is redacted, then cut, where it is handled (`redacted`).
    text = body[:MAX_ERROR_READ].decode("utf-8", "replace").strip()
    return UpstreamFailure(
        outcome_for_status(status),
        f"HTTP {status}: {text}" if text else f"HTTP {status}",
        status=status,
        retry_after_s=parse_retry_after(retry_after),
        body=body[:MAX_ERROR_READ],
    )
