"""Forwarding a started attempt to the client: the stream relay, the whole-body answer, the
model rename and the guard that closes the upstream response.

Dispatch decides which attempt is the client's (failover, hedging); this module only moves
its bytes: whole SSE events at a time, never re-serialised, provider error events redacted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.core import requestid
from proxy.core.domain import Attempt, Candidate, Outcome
from proxy.serving.assemble import WholeAnswer
from proxy.serving.metering import UsageTap
from proxy.upstream.base import UpstreamFailure, UpstreamResponse
from proxy.upstream.measure import AttemptClock
from proxy.upstream.redact import Redactor
from proxy.upstream.sse import CHAT, EventSplitter, StreamGrammar, parse_payload

log = logging.getLogger("ttft_router.forward")


class ResponseGuard:
    """Holds an entered upstream response; `close()` leaves it, once (aborting the upstream
    request if its body was not read to the end).

    A one-slot AsyncExitStack: a full one per attempt cost more than this whole class does.
    """

    __slots__ = ("_entered",)

    def __init__(self) -> None:
        self._entered: AbstractAsyncContextManager[UpstreamResponse] | None = None

    async def enter(
        self, opening: AbstractAsyncContextManager[UpstreamResponse]
    ) -> UpstreamResponse:
        response = await opening.__aenter__()
        self._entered = opening
        return response

    async def close(self) -> None:
        entered, self._entered = self._entered, None
        if entered is not None:
            await entered.__aexit__(None, None, None)


@dataclass(slots=True)
class Started:
    """An attempt that produced its first token (or, for whole-body calls, its body)."""

    candidate: Candidate
    clock: AttemptClock
    guard: ResponseGuard
    prelude: bytes
    chunks: AsyncIterator[bytes] | None
    splitter: EventSplitter | None
    attempt: Attempt
    upstream_stream: bool


class ModelRewrite:
    """Replace the provider's model id with the public name in forwarded JSON.

    Only the key-value pair `"model":"<id>"` (compact or with one space) is replaced; inside
    any JSON string its quotes would be escaped, so content can never match by accident.
    """

    __slots__ = ("_compact", "_replacement", "_spaced", "_spaced_to")

    def __init__(self, upstream_model: str, public_model: str) -> None:
        old, new = orjson.dumps(upstream_model), orjson.dumps(public_model)
        self._compact = b'"model":' + old
        self._replacement = b'"model":' + new
        self._spaced = b'"model": ' + old
        self._spaced_to = b'"model": ' + new

    def __call__(self, data: bytes) -> bytes:
        if self._compact == self._replacement:
            return data
        data = data.replace(self._compact, self._replacement)
        if self._spaced in data:
            data = data.replace(self._spaced, self._spaced_to)
        return data


async def relay(
    started: Started,
    public_model: str,
    redact: Redactor,
    emit: Callable[[bytes], Awaitable[None]],
    grammar: StreamGrammar = CHAT,
    tap: Callable[[bytes], bytes] | None = None,
) -> Outcome:
    """`emit` the prelude, then the rest, whole events at a time. A break after the first
    token ends the client's stream with one OpenAI-shaped error event; returns the outcome
    (OK or STREAM_ERROR). The caller closes the guard. A callback rather than an async
    generator: one per request, and asyncio registers every async generator in a WeakSet."""
    rewrite = ModelRewrite(started.candidate.upstream_model, public_model)
    answer = started.clock.tally(started.prelude, grammar)  # decode throughput
    try:
        screen = grammar.may_hold_error
        prelude = started.prelude if tap is None else tap(started.prelude)
        await emit(rewrite(_screen(redact, prelude, screen)))
        chunks, splitter = started.chunks, started.splitter
        assert chunks is not None and splitter is not None
        async for data in chunks:
            events = splitter.feed(data)
            if events:
                answer.note(events)  # before metering may drop a usage chunk
                if tap is not None:  # metering: notes usage, may drop its chunk
                    events = tap(events)
            if events:
                await emit(rewrite(_screen(redact, events, screen)))
        if splitter.pending.strip():  # a last event without its blank line
            last = splitter.pending + b"\n\n"
            answer.note(last)
            if tap is not None:  # a Responses stream's usage is in its last event
                last = tap(last)
            if last:
                await emit(rewrite(redact.bytes(last)))
    except UpstreamFailure as raw:
        failure = raw.redacted(redact)
        provider = started.candidate.provider
        started.attempt.error = failure.message
        log.warning(
            "stream broke after first token: %s on %s: %s", public_model, provider, failure.message
        )
        await emit(grammar.error_event(_stream_error_body(provider, failure)))
        return Outcome.STREAM_ERROR
    return Outcome.OK


def _screen(redact: Redactor, events: bytes, may_hold_error: Callable[[bytes], bool]) -> bytes:
    """Forwarded events, with a provider's error event redacted (its text is foreign; which
    events may be errors is the stream grammar's cheap check)."""
    return redact.bytes(events) if may_hold_error(events) else events


async def whole_body(
    started: Started,
    assembly: str,
    public_model: str,
    tap: UsageTap | None = None,
    grammar: StreamGrammar = CHAT,
) -> bytes:
    """The client's JSON answer: the upstream body renamed, or assembled from its stream
    (`assembly`: the endpoint's, serving.assemble.WholeAnswer; UpstreamFailure when the stream
    carries an error event, AnswerTooLarge past the byte cap). `tap` (metering) is given the
    answer's usage; the stream, read by the endpoint's `grammar`, is tallied on the attempt's
    clock (decode throughput)."""
    if not started.upstream_stream:
        if tap is not None:
            parsed = parse_payload(started.prelude)
            if parsed is not None:
                tap.note_body(parsed)
        return ModelRewrite(started.candidate.upstream_model, public_model)(started.prelude)
    assert started.chunks is not None and started.splitter is not None
    whole = WholeAnswer(assembly)  # folded as it arrives, within a byte cap
    tally = started.clock.tally(started.prelude, grammar)
    await whole.feed(started.prelude)
    async for data in started.chunks:
        events = started.splitter.feed(data)
        tally.note(events)
        await whole.feed(events)
    answer = whole.answer()
    answer["model"] = public_model
    if tap is not None:
        tap.note_body(answer)
    return orjson.dumps(answer)


def _stream_error_body(provider: str, failure: UpstreamFailure) -> dict[str, Any]:
    return {
        "error": {
            "message": f"upstream stream from {provider} broke after the first token: "
            f"{failure.message}",
            "type": "api_error",
            "param": None,
            "code": "upstream_stream_error",
            "request_id": requestid.current(),
        }
    }
