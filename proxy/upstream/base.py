"""What every upstream client offers dispatch, and the one failure type it may raise.

An upstream opens one request to one provider and yields a response whose body is read as
raw bytes (SSE for streams). Foreign exceptions (aiohttp, litellm) never leave `upstream/`:
they become `UpstreamFailure`, carrying the `Outcome` that the sample will record.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

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
