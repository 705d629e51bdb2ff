"""What a client is told when no attempt could serve its request: one ProxyError, from the
attempts' failures (dispatch) or from why routing had nothing to try (routing's Blocked)."""

from __future__ import annotations

import orjson

from proxy.core.domain import Decision, Outcome
from proxy.core.errors import (
    NoProviderAvailable,
    ProxyError,
    RateLimited,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from proxy.routing import Blocked
from proxy.upstream.base import UpstreamFailure

# A provider's statuses that blame the request, not the pair: returned to the client, never
# failed over, never held against the pair.
CLIENT_FAULT = frozenset({400, 413, 422})


def is_client_fault(failure: UpstreamFailure) -> bool:
    return failure.status in CLIENT_FAULT


def raise_if_client_fault(failure: UpstreamFailure) -> None:
    if failure.status in CLIENT_FAULT:
        raise UpstreamRejected(_upstream_message(failure), status=failure.status) from None


def unavailable(decision: Decision, blocked: Blocked | None) -> ProxyError:
    """Routing left nothing to try (`blocked` says why)."""
    if blocked is not None and blocked.rate_limited:
        return RateLimited(
            f"every provider of '{decision.model}' is rate-limited: {decision.reason}",
            retry_after_s=blocked.retry_after_s or 1.0,
        )
    retry = blocked.retry_after_s if blocked is not None else None
    return NoProviderAvailable(f"model '{decision.model}': {decision.reason}", retry_after_s=retry)


def all_failed(decision: Decision, failures: list[UpstreamFailure]) -> ProxyError:
    """Every attempt failed before its first token (or none fitted in the deadline)."""
    model = decision.model
    detail = (
        "; ".join(f"{a.provider}: {a.error}" for a in decision.attempts if a.error)
        or "no attempt fitted in the deadline"
    )
    if failures and all(f.outcome is Outcome.RATE_LIMITED for f in failures):
        waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
        return RateLimited(
            f"every provider of '{model}' answered 429: {detail}",
            retry_after_s=min(waits) if waits else 1.0,
        )
    if failures and all(f.outcome is Outcome.TIMEOUT for f in failures):
        return UpstreamTimeout(f"no provider of '{model}' answered in time: {detail}")
    return UpstreamFailed(f"every provider of '{model}' failed: {detail}")


def _upstream_message(failure: UpstreamFailure) -> str:
    try:
        parsed = orjson.loads(failure.body)
        message = parsed["error"]["message"]
        if isinstance(message, str):
            return f"provider rejected the request: {message}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return f"provider rejected the request: {failure.message}"
