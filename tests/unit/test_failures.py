"""serving.failures: a provider's 400/413/422 is the client's fault (returned, with the
provider's own message when it sent one in OpenAI's shape), anything else fails over."""

from __future__ import annotations

import pytest

from proxy.core.domain import Outcome
from proxy.core.errors import UpstreamRejected
from proxy.serving.failures import _upstream_message, raise_if_client_fault
from proxy.upstream.base import UpstreamFailure


def failure(status: int, body: bytes = b"") -> UpstreamFailure:
    return UpstreamFailure(Outcome.HTTP_4XX, f"HTTP {status}", status=status, body=body)


def test_the_providers_openai_shaped_message_is_quoted_else_the_failure() -> None:
    shaped = failure(400, b'{"error": {"message": "max_tokens is too large"}}')
    assert _upstream_message(shaped) == "provider rejected the request: max_tokens is too large"
    for body in (b"not json", b'{"error": "flat"}', b'{"error": {"message": 7}}'):
        assert _upstream_message(failure(400, body)) == "provider rejected the request: HTTP 400"


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_client_fault_is_raised_with_the_providers_status(status: int) -> None:
    with pytest.raises(UpstreamRejected) as rejected:
        raise_if_client_fault(failure(status))
    assert rejected.value.status == status


@pytest.mark.parametrize("status", [401, 404, 429, 500])
def test_other_statuses_are_left_to_failover(status: int) -> None:
    raise_if_client_fault(failure(status))  # returns: the next candidate is tried
