"""What a client is told when no attempt could serve its request: one ProxyError, from the
attempts' failures (dispatch) or from why routing had nothing to try (routing's Blocked)."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
from proxy.settings.policy import Circuit
from proxy.upstream.base import UpstreamFailure, blames_deployment, blames_request, error_object

# A provider's statuses that blame the request whoever serves it: returned to the client,
# never failed over, never held against the pair (unless the error says the provider's own
# deployment is at fault: its key, billing, quota, a model it lacks).
CLIENT_FAULT = frozenset({400, 413, 415, 422})
# Statuses that blame the request when the provider's error says so (a stored response that
# is not there names its parameter; a model the provider lacks is the deployment's fault).
_MAYBE_CLIENT_FAULT = frozenset({404, 409})
# A 429 for one request larger than the provider's tokens-per-minute limit ("Request too
# large for ... Limit 30000, Requested 41000"): that prompt's, not a rate the pair hit.
_TOO_LARGE = re.compile(rb"(?i)request too large|limit\D{0,8}(\d+)\D{1,16}requested\D{0,8}(\d+)")


@dataclass(frozen=True, slots=True)
class Fault:
    """Whose a failed attempt is. `final`: the request's to fix, sent to the client now (no
    failover); `pair`: held against the pair (its circuit, a 429's exclusion); `sample`: its
    censored sample is kept in the pair's window."""

    kind: str
    final: bool
    pair: bool
    sample: bool


PAIR_FAULT = Fault("pair", final=False, pair=True, sample=True)
REQUEST_FAULT = Fault("rejected", final=True, pair=False, sample=False)
TOO_LARGE = Fault("too_large", final=False, pair=False, sample=False)  # another may take it
LONG_PROMPT = Fault("long_prompt", final=False, pair=False, sample=True)  # measured


def fault_of(failure: UpstreamFailure, prompt_tokens: int, circuit: Circuit) -> Fault:
    """Whose fault a failed attempt is (docs/security.md, "What a client cannot do")."""
    if _is_final(failure):
        return REQUEST_FAULT
    if failure.status == 429 and _too_large(failure.body):
        return TOO_LARGE
    if failure.outcome is Outcome.TIMEOUT and prompt_tokens >= circuit.long_prompt_tokens:
        return LONG_PROMPT
    return PAIR_FAULT


def _is_final(failure: UpstreamFailure) -> bool:
    status = failure.status
    if status in CLIENT_FAULT:  # unless its error blames the provider's own deployment
        return not blames_deployment(_error(failure.body))
    if status in _MAYBE_CLIENT_FAULT:
        error = _error(failure.body)
        return error is not None and bool(error.get("param")) and blames_request(error)
    return False


def _too_large(body: bytes) -> bool:
    found = _TOO_LARGE.search(body)
    if found is None:
        return False
    limit, requested = found.group(1), found.group(2)
    return limit is None or int(requested) > int(limit)


def _error(body: bytes) -> dict[str, object] | None:
    try:
        return error_object(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def raise_if_client_fault(failure: UpstreamFailure) -> None:
    """Raise the provider's refusal to the client when the request is at fault."""
    if _is_final(failure):
        raise UpstreamRejected(_upstream_message(failure), status=failure.status or 400) from None


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
    error = _error(failure.body)
    message = error.get("message") if error is not None else None
    if isinstance(message, str):
        return f"provider rejected the request: {message}"
    return f"provider rejected the request: {failure.message}"
