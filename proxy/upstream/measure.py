"""One attempt measured: the TTFT clock and censoring (-> one Sample), first-output
detection, a whole stream measured end to end (probes and the published method's bench use
`measure_stream`), and the usage an answer reported.

The clock starts when the upstream request is sent and stops at the first streamed chunk
that carries output (the endpoint's `upstream.sse.StreamGrammar`: a chat delta, a Responses
API `*.delta` event), not at headers, the role-only chunk or `response.created`.
Time to first byte is kept beside it. An attempt cut off before its first token (timeout,
client gone, hedge loser) is censored at the time it was cut off.

After the first token the clock tallies the answer (`AnswerTally`, fed the whole events of
every read as they are relayed or read): its output events counted (the stream grammar's
`count_output`, on the bytes), the moment of the last, and the completion tokens a usage
chunk reports. A successful attempt's sample carries `output_tokens` (the reported count,
else the output events counted) and `decode_s` (first token to last output chunk): its
decode throughput.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from proxy.core.domain import Outcome, Sample, Source
from proxy.upstream.base import Upstream, UpstreamFailure, event_failure
from proxy.upstream.sse import (
    CHAT,
    EventSplitter,
    StreamGrammar,
    is_error_event,
    iter_data,
    parse_payload,
)

USAGE_MARKS = (b'"usage":{', b'"usage": {')  # a usage object, not `"usage":null`


class AttemptClock:
    """Started at send; `first_byte()`/`first_token()` mark the moments (first call wins);
    `tally()` starts the tally of the answer after its first token (decode throughput)."""

    __slots__ = ("answer", "started", "ttfb_s", "ttft_s", "wall_start")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.wall_start = time.time()
        self.ttfb_s: float | None = None
        self.ttft_s: float | None = None
        self.answer: AnswerTally | None = None

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

    def tally(self, prelude: bytes, grammar: StreamGrammar) -> AnswerTally:
        """Start tallying the answer: `prelude` is what was read up to its first token; feed
        the returned tally every later read's whole events (`AnswerTally.note`)."""
        self.answer = AnswerTally(prelude, grammar, self.started)
        return self.answer

    def decode(self) -> tuple[int | None, float | None]:
        """(output tokens, seconds from the first token to the last output chunk) of the
        answer tallied; (None, None) before a first token or without a tally."""
        if self.ttft_s is None or self.answer is None:
            return None, None
        return self.answer.result(self.ttft_s)

    def sample(
        self,
        model: str,
        provider: str,
        outcome: Outcome,
        *,
        source: Source = Source.PASSIVE,
        prompt_tokens: int = 0,
        replica: str = "",
        client: str = "",
    ) -> Sample:
        """The attempt's sample. Without a first token, TIMEOUT and CANCELLED are censored
        at the elapsed time (TTFT > elapsed); other failures carry no latency. Only a
        successful attempt's answer measures decode throughput (`decode()`)."""
        elapsed = self.elapsed()
        censored = None
        if self.ttft_s is None and outcome in (Outcome.TIMEOUT, Outcome.CANCELLED):
            censored = elapsed
        tokens, decode_s = self.decode() if outcome is Outcome.OK else (None, None)
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
            output_tokens=tokens,
            decode_s=decode_s,
            client=client,
        )


class AnswerTally:
    """One answer after its first token, tallied as it streams, for its decode throughput.

    Per read only what is cheap: its events counted (blank lines), and the last two reads kept
    with their times (a reference each, nothing copied). The output events are told apart
    once, at the end (`result`): the prelude's and the last two reads' by the stream
    grammar's `count_output`, every read between them taken as output, so the closing events
    (a finish chunk, the usage chunk, `[DONE]`, the Responses API's `*.done` events) are not
    counted. The usage a stream reports is read there too: it comes last."""

    __slots__ = ("_grammar", "_started", "before_tail", "before_tail_s", "events", "prelude",
                 "tail", "tail_s")  # fmt: skip

    def __init__(self, prelude: bytes, grammar: StreamGrammar, started: float) -> None:
        self.prelude = prelude
        self._grammar = grammar
        self._started = started
        self.events = 0  # whole events read after the prelude
        self.tail: bytes | None = None  # the last read's events, and the one's before
        self.before_tail: bytes | None = None
        self.tail_s = 0.0  # their times, seconds since send
        self.before_tail_s = 0.0

    def note(self, events: bytes) -> None:
        """A read's whole events (b"" and reads of no whole event are skipped)."""
        if events:
            self.events += events.count(b"\n\n")
            self.before_tail, self.tail = self.tail, events
            self.before_tail_s, self.tail_s = self.tail_s, time.perf_counter() - self._started

    def result(self, ttft_s: float) -> tuple[int | None, float | None]:
        """(output tokens, seconds from `ttft_s` to the last output chunk): the reported
        completion tokens when a usage chunk came, else the output events counted."""
        count = self._grammar.count_output
        output = count(self.prelude) + self.events
        last_s = ttft_s
        for block, at_s in ((self.before_tail, self.before_tail_s), (self.tail, self.tail_s)):
            if block is not None:
                carried = count(block)
                output -= block.count(b"\n\n") - carried  # its closing events
                if carried:
                    last_s = at_s
        if self.tail is not None and last_s == ttft_s:
            last_s = self.before_tail_s or ttft_s  # the final reads closed it: the one before
        reported = None
        for block in (self.tail, self.before_tail) if self.tail is not None else (self.prelude,):
            if block is not None and (reported := reported_tokens(block)) is not None:
                break
        tokens = reported if reported is not None else output
        return (tokens, max(0.0, last_s - ttft_s)) if tokens > 0 else (None, None)


def reported_tokens(events: bytes) -> int | None:
    """The completion tokens a usage chunk among `events` reports; None: none does."""
    if USAGE_MARKS[0] not in events and USAGE_MARKS[1] not in events:
        return None
    usage = Usage()
    for payload in iter_data(events):
        if b'"usage"' in payload and (chunk := parse_payload(payload)) is not None:
            usage.note(chunk)
    return usage.completion_tokens


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


def _error_event(event: dict[str, object]) -> UpstreamFailure:
    """An error event before any output (upstream.base.event_failure)."""
    return event_failure(event, Outcome.HTTP_5XX, "before output")


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
            raise _error_event(watch.upstream_error)
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
        answer = clock.tally(prelude, CHAT)
        for payload in iter_data(prelude):
            chunk = parse_payload(payload)
            if chunk is not None:
                tally.note(chunk)
        try:
            async for data in chunks:
                events = splitter.feed(data)
                answer.note(events)
                for payload in iter_data(events):
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
