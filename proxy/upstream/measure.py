"""One attempt measured: the TTFT clock and censoring (-> one Sample), first-output
detection, a whole stream measured end to end (probes and the published method's bench use
`measure_stream`), and the usage an answer reported.

The clock starts when the upstream request is sent and stops at the first streamed chunk
that carries output (the endpoint's `upstream.sse.StreamGrammar`: a chat delta, a Responses
API `*.delta` event), not at headers, the role-only chunk or `response.created`.
Time to first byte is kept beside it. An attempt cut off before its first token (timeout,
client gone, hedge loser) is censored at the time it was cut off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.core.domain import Outcome, Sample, Source
from proxy.upstream.base import Upstream, UpstreamFailure
from proxy.upstream.sse import (
    CHAT,
    EventSplitter,
    StreamGrammar,
    is_error_event,
    iter_data,
    parse_payload,
)


class AttemptClock:
    """Started at send; `first_byte()`/`first_token()` mark the moments (first call wins)."""

    __slots__ = ("started", "ttfb_s", "ttft_s", "wall_start")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.wall_start = time.time()
        self.ttfb_s: float | None = None
        self.ttft_s: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def first_byte(self) -> None:
        if self.ttfb_s is None:
            self.ttfb_s = self.elapsed()

    def first_token(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = self.elapsed()
            if self.ttfb_s is None:
                self.ttfb_s = self.ttft_s

    def sample(
        self,
        model: str,
        provider: str,
        outcome: Outcome,
        *,
        source: Source = Source.PASSIVE,
        prompt_tokens: int = 0,
        replica: str = "",
    ) -> Sample:
        """The attempt's sample. Without a first token, TIMEOUT and CANCELLED are censored
        at the elapsed time (TTFT > elapsed); other failures carry no latency."""
        elapsed = self.elapsed()
        censored = None
        if self.ttft_s is None and outcome in (Outcome.TIMEOUT, Outcome.CANCELLED):
            censored = elapsed
        return Sample(
            model=model,
            provider=provider,
            outcome=outcome,
            ttft_s=self.ttft_s,
            timestamp=self.wall_start,
            ttfb_s=self.ttfb_s,
            total_s=elapsed,
            censored_at_s=censored,
            source=source,
            prompt_tokens=prompt_tokens,
            replica=replica,
        )


class FirstTokenWatch:
    """Feeds raw stream bytes until the first output-carrying event (by `grammar`).

    `feed()` returns the whole events completed so far (to forward), and sets
    `seen_output` once one of them carries output, stopping the clock.
    """

    __slots__ = ("clock", "grammar", "seen_output", "splitter", "upstream_error")

    def __init__(self, clock: AttemptClock, grammar: StreamGrammar = CHAT) -> None:
        self.clock = clock
        self.grammar = grammar
        self.splitter = EventSplitter()
        self.seen_output = False
        self.upstream_error: dict[str, object] | None = None

    def feed(self, data: bytes) -> bytes:
        self.clock.first_byte()
        events = self.splitter.feed(data)
        if events and not self.seen_output:
            grammar = self.grammar
            for payload in iter_data(events):
                chunk = parse_payload(payload)
                if chunk is None:
                    continue
                if grammar.is_error(chunk):
                    self.upstream_error = chunk
                    break
                if grammar.carries_output(chunk):
                    self.seen_output = True
                    self.clock.first_token()
                    break
        return events


async def read_first_token(
    chunks: AsyncIterator[bytes], clock: AttemptClock, grammar: StreamGrammar = CHAT
) -> tuple[bytes, EventSplitter]:
    """Read a stream until its first output-carrying event; stops `clock` there.

    Returns the whole events read so far (to forward) and the splitter holding whatever
    partial event follows, so the caller can go on reading `chunks`. A stream that ends
    with no output at all (an empty answer) stops the clock at its end. An error event
    before any output raises UpstreamFailure(HTTP_5XX); the caller owns the deadline.
    """
    watch = FirstTokenWatch(clock, grammar)
    prelude: list[bytes] = []
    async for data in chunks:
        events = watch.feed(data)
        if watch.upstream_error is not None:
            message = orjson.dumps(watch.upstream_error).decode()  # redacted by the caller
            raise UpstreamFailure(Outcome.HTTP_5XX, f"error event before output: {message}")
        if events:
            prelude.append(events)
        if watch.seen_output:
            break
    else:
        # The stream ended with no output chunk at all (an empty answer): the client
        # has everything now, so that is its time to first (and last) token.
        clock.first_token()
        if watch.splitter.pending:
            prelude.append(watch.splitter.pending + b"\n\n")
    return b"".join(prelude), watch.splitter


@dataclass(slots=True)
class Usage:
    """Token counts an answer reported (a chat stream's `stream_options.include_usage`
    chunk, a whole body, the last event of a Responses stream); None: not reported."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def note(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        response = chunk.get("response")  # a Responses event: response.completed and the like
        if usage is None and isinstance(response, dict):
            usage = response.get("usage")
        if isinstance(usage, dict):
            # chat and completions name them prompt/completion, the Responses API input/output
            for name, alias in _USAGE_NAMES:
                value = usage.get(name, usage.get(alias))
                if isinstance(value, int) and value >= 0:
                    setattr(self, name, value)


_USAGE_NAMES = (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens"))


async def measure_stream(
    upstream: Upstream,
    path: str,
    body: bytes,
    first_token_s: float,
    usage: Usage | None = None,
) -> tuple[AttemptClock, Outcome, str | None]:
    """One whole streamed request, measured: (clock, outcome, error message or None).

    The clock runs from send to the first output chunk (`read_first_token`); the rest of
    the stream is read to its end so the request completes as a client's would. No first
    token within `first_token_s` is a TIMEOUT (censored by `clock.sample`); a break or an
    error event after the first token is a STREAM_ERROR with its TTFT kept. `usage`, when
    given, is filled from the stream's usage chunk, if it sends one.
    """
    clock = AttemptClock()
    tally = usage or Usage()
    async with AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(first_token_s):
                response = await stack.enter_async_context(upstream.open(path, body, stream=True))
                chunks = response.chunks()
                prelude, splitter = await read_first_token(chunks, clock)
        except UpstreamFailure as failure:
            return clock, failure.outcome, failure.message
        except TimeoutError:
            return clock, Outcome.TIMEOUT, f"no first token within {clock.elapsed():.1f} s"
        for payload in iter_data(prelude):
            chunk = parse_payload(payload)
            if chunk is not None:
                tally.note(chunk)
        try:
            async for data in chunks:
                for payload in iter_data(splitter.feed(data)):
                    chunk = parse_payload(payload)
                    if chunk is None:
                        continue
                    if is_error_event(chunk):
                        return clock, Outcome.STREAM_ERROR, "error event after the first token"
                    tally.note(chunk)
        except UpstreamFailure as failure:
            return clock, Outcome.STREAM_ERROR, failure.message
    return clock, Outcome.OK, None


def estimate_prompt_tokens(body_len: int) -> int:
    """A cheap prompt-size estimate (~4 bytes of request JSON per token)."""
    return body_len // 4
