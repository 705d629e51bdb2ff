"""serving.failures: a provider's 400/413/415/422 is the client's fault (returned, with the
provider's own message when it sent one in OpenAI's shape), anything else fails over; what
the request caused (a 429 for its size, a missing stored object it named, an error event
that blames it, a long prompt's timeout) is not held against the pair."""

from __future__ import annotations

import pytest

from proxy.core.domain import Outcome
from proxy.core.errors import UpstreamRejected
from proxy.serving.failures import (
    LONG_PROMPT,
    PAIR_FAULT,
    REQUEST_FAULT,
    TOO_LARGE,
    _upstream_message,
    fault_of,
    raise_if_client_fault,
)
from proxy.settings.policy import Circuit
from proxy.upstream.base import UpstreamFailure
from proxy.upstream.measure import _error_event

CIRCUIT = Circuit()


def failure(status: int, body: bytes = b"") -> UpstreamFailure:
    return UpstreamFailure(Outcome.HTTP_4XX, f"HTTP {status}", status=status, body=body)


def test_the_providers_openai_shaped_message_is_quoted_else_the_failure() -> None:
    shaped = failure(400, b'{"error": {"message": "max_tokens is too large"}}')
    assert _upstream_message(shaped) == "provider rejected the request: max_tokens is too large"
    for body in (b"not json", b'{"error": "flat"}', b'{"error": {"message": 7}}'):
        assert _upstream_message(failure(400, body)) == "provider rejected the request: HTTP 400"


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_a_client_fault_is_raised_with_the_providers_status(status: int) -> None:
    with pytest.raises(UpstreamRejected) as rejected:
        raise_if_client_fault(failure(status))
    assert rejected.value.status == status


@pytest.mark.parametrize("status", [401, 404, 429, 500])
def test_other_statuses_are_left_to_failover(status: int) -> None:
    raise_if_client_fault(failure(status))  # returns: the next candidate is tried


TOO_LARGE_429 = (b'{"error": {"message": "Request too large for gpt-4o in organization org-1 on '
                 b'tokens per min (TPM): Limit 30000, Requested 41000.", "type": "tokens", '
                 b'"code": "rate_limit_exceeded"}}')  # fmt: skip
RATE_429 = (
    b'{"error": {"message": "Rate limit reached for gpt-4o on tokens per min '
    b'(TPM): Limit 30000, Used 29900, Requested 300.", "code": "rate_limit_exceeded"}}'
)


def limited(body: bytes) -> UpstreamFailure:
    return UpstreamFailure(Outcome.RATE_LIMITED, "HTTP 429", status=429, body=body)


def test_whose_fault_a_failed_attempt_is() -> None:
    assert fault_of(failure(400), 10, CIRCUIT) is REQUEST_FAULT
    # a 429 for one prompt above the provider's per-minute limit: the prompt's; a rate: the pair's
    assert fault_of(limited(TOO_LARGE_429), 10, CIRCUIT) is TOO_LARGE
    assert fault_of(limited(RATE_429), 10, CIRCUIT) is PAIR_FAULT
    assert fault_of(limited(b""), 10, CIRCUIT) is PAIR_FAULT
    # a 404 naming a parameter of the request (a stored response that is not there) is the
    # request's; a model the provider lacks is the deployment's
    missing = (
        b'{"error": {"message": "Response with id resp_1 not found.", '
        b'"type": "invalid_request_error", "param": "previous_response_id"}}'
    )
    assert fault_of(failure(404, missing), 10, CIRCUIT) is REQUEST_FAULT
    no_model = (
        b'{"error": {"message": "The model x does not exist", '
        b'"type": "invalid_request_error", "param": null, "code": "model_not_found"}}'
    )
    assert fault_of(failure(404, no_model), 10, CIRCUIT) is PAIR_FAULT
    assert fault_of(failure(401), 10, CIRCUIT) is PAIR_FAULT
    # a first-token timeout: a long prompt's own, a short one's the pair's
    timeout = UpstreamFailure(Outcome.TIMEOUT, "no first token within 90.0 s")
    assert fault_of(timeout, CIRCUIT.long_prompt_tokens, CIRCUIT) is LONG_PROMPT
    assert fault_of(timeout, 100, CIRCUIT) is PAIR_FAULT
    assert not TOO_LARGE.final and not TOO_LARGE.pair and LONG_PROMPT.sample


def test_an_error_event_before_output_blames_the_request_only_when_it_says_so() -> None:
    filtered = _error_event({"error": {"message": "flagged", "type": "invalid_request_error",
                                       "code": "content_filter"}})  # fmt: skip
    assert filtered.status == 400 and fault_of(filtered, 10, CIRCUIT) is REQUEST_FAULT
    with pytest.raises(UpstreamRejected, match="flagged"):
        raise_if_client_fault(filtered)
    too_long = _error_event({"type": "error", "code": "context_length_exceeded",
                             "message": "too long", "param": None})  # fmt: skip
    assert fault_of(too_long, 10, CIRCUIT) is REQUEST_FAULT
    overloaded = _error_event({"error": {"message": "overloaded", "type": "server_error"}})
    assert overloaded.status is None and fault_of(overloaded, 10, CIRCUIT) is PAIR_FAULT
    failed = _error_event({"type": "response.failed", "response": {"error": {
        "code": "server_error", "message": "boom"}}})  # fmt: skip
    assert fault_of(failed, 10, CIRCUIT) is PAIR_FAULT


def test_a_400_that_blames_the_providers_own_deployment_is_the_pairs() -> None:
    """A 400 about the provider's account (Anthropic's credit balance), key, quota or a
    model it lacks would come back for every request routed there: the pair's fault, failed
    over and counted against its circuit; an unhashable code is no crash."""
    for error in (
        b'{"error": {"message": "Your credit balance is too low to access the API.", '
        b'"type": "invalid_request_error"}}',
        b'{"error": {"message": "x", "type": "invalid_request_error", "param": "model"}}',
        b'{"error": {"message": "x", "type": "invalid_request_error", '
        b'"code": "insufficient_quota"}}',
    ):
        assert fault_of(failure(400, error), 10, CIRCUIT) is PAIR_FAULT
        raise_if_client_fault(failure(400, error))  # returns: failed over
    odd = (
        b'{"error": {"message": "x", "type": "invalid_request_error", "param": "input", '
        b'"code": {"a": 1}}}'
    )
    assert fault_of(failure(404, odd), 10, CIRCUIT) is REQUEST_FAULT
    assert fault_of(failure(400, odd), 10, CIRCUIT) is REQUEST_FAULT
