"""measure: the attempt clock stops at the first output chunk; failures are censored or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy.core.domain import Outcome
from proxy.upstream.base import UpstreamFailure
from proxy.upstream.measure import AttemptClock, FirstTokenWatch, read_first_token

ROLE = b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
TOKEN = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
ERROR = b'data: {"error":{"message":"overloaded"}}\n\n'


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_a_role_only_chunk_is_a_first_byte_not_a_first_token() -> None:
    clock = AttemptClock()
    watch = FirstTokenWatch(clock)
    assert watch.feed(ROLE) == ROLE
    assert clock.ttfb_s is not None and clock.ttft_s is None and not watch.seen_output
    watch.feed(TOKEN[:20])  # half an event: nothing to forward yet
    assert clock.ttft_s is None
    assert watch.feed(TOKEN[20:]) == TOKEN
    assert watch.seen_output and clock.ttft_s is not None and clock.ttft_s >= clock.ttfb_s


async def test_read_first_token_returns_the_prelude_and_an_error_event_raises() -> None:
    clock = AttemptClock()
    prelude, _ = await read_first_token(chunks(ROLE, TOKEN, TOKEN), clock)
    assert prelude == ROLE + TOKEN and clock.ttft_s is not None
    with pytest.raises(UpstreamFailure) as failed:
        await read_first_token(chunks(ROLE, ERROR), AttemptClock())
    assert failed.value.outcome is Outcome.HTTP_5XX and "overloaded" in failed.value.message


def test_only_timeouts_and_cancels_before_the_first_token_are_censored() -> None:
    clock = AttemptClock()
    timed_out = clock.sample("m", "p", Outcome.TIMEOUT)
    assert timed_out.ttft_s is None and timed_out.censored_at_s is not None
    assert clock.sample("m", "p", Outcome.HTTP_5XX).censored_at_s is None
    clock.first_token()
    served = clock.sample("m", "p", Outcome.CANCELLED)
    assert served.ttft_s is not None and served.censored_at_s is None
