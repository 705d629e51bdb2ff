"""Failover before the first token, deadlines, streaming the winner, recording every attempt.

For each request dispatch walks the ranked candidates: an attempt that fails before its
first token (connect error, timeout, 5xx, 429, other provider-side 4xx) costs the client
nothing and the next candidate is tried, within the policy's total deadline and attempt
limit. Each attempt yields exactly one Sample (through the buffer) and one Attempt in the
decision. After the first token the stream is the client's: an upstream failure then ends
it with one OpenAI-shaped error event, never a silent truncation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from proxy.assemble import assemble_chat, assemble_completion
from proxy.circuit import retry_after_s
from proxy.domain import Attempt, Candidate, Decision, Outcome, Pair, Sample
from proxy.errors import (
    NoProviderAvailable,
    ProxyError,
    RateLimited,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from proxy.measure import AttemptClock, read_first_token
from proxy.metrics import Metrics
from proxy.policy import ModelPolicy
from proxy.redact import Redactor
from proxy.routing import Router
from proxy.store.buffer import SampleBuffer
from proxy.timers import Deadline
from proxy.upstream.base import Upstream, UpstreamFailure, UpstreamResponse
from proxy.upstream.sse import EventSplitter, error_event, iter_data, parse_payload

log = logging.getLogger("ttft_router.dispatch")

Kind = Literal["chat", "completion", "embedding"]
PATHS: dict[Kind, str] = {
    "chat": "/chat/completions",
    "completion": "/completions",
    "embedding": "/embeddings",
}
CLIENT_FAULT = frozenset({400, 413, 422})


@dataclass(slots=True)
class Call:
    """One client request as dispatch needs it. `body` is the client's parsed JSON."""

    kind: Kind
    model: str
    body: dict[str, Any]
    stream: bool
    prompt_tokens: int
    decision: Decision
    policy: ModelPolicy
    deadline: float = 0.0  # perf_counter() time by which a first token must have come
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Deployment:
    """How dispatch reaches one provider."""

    upstream: Upstream
    first_token_s: float
    streams_for_non_stream: bool


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


class Dispatcher:
    def __init__(
        self,
        deployments: Mapping[str, Deployment],
        buffer: SampleBuffer,
        router: Router,
        metrics: Metrics,
        replica: str,
        redact: Redactor,
    ) -> None:
        self._deployments = deployments
        self._buffer = buffer
        self._router = router
        self._metrics = metrics
        self._replica = replica
        self._redact = redact

    # -- the failover loop ------------------------------------------------------------

    async def start(self, call: Call) -> Started:
        """Try candidates in order until one yields a first token. Raises ProxyError."""
        decision = call.decision
        if not decision.ranked:
            self.finish(call, None)
            raise _unavailable(decision, self._router, time.time())
        if not call.deadline:
            call.deadline = time.perf_counter() + call.policy.failover.total_deadline_s
        tried = {a.provider for a in decision.attempts}
        budget = call.policy.failover.max_attempts - len(decision.attempts)
        untried = [c for c in decision.ranked if c.provider not in tried]
        failures: list[UpstreamFailure] = []
        for candidate in untried[: max(budget, 0)]:
            remaining = call.deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                return await self._attempt(call, candidate, remaining)
            except UpstreamFailure as failure:
                failures.append(failure)
                if failure.status in CLIENT_FAULT:
                    self.finish(call, None)
                    raise UpstreamRejected(
                        _upstream_message(failure), status=failure.status
                    ) from None
        self.finish(call, None)
        raise _all_failed(call, failures)

    async def _attempt(self, call: Call, candidate: Candidate, remaining: float) -> Started:
        deployment = self._deployments[candidate.provider]
        upstream_stream = call.stream or (
            call.kind != "embedding" and deployment.streams_for_non_stream
        )
        payload = _upstream_body(call, candidate.upstream_model, upstream_stream)
        clock = AttemptClock()
        attempt = Attempt(candidate.provider, Outcome.OK)
        call.decision.attempts.append(attempt)
        self._router.breakers.on_start(Pair(call.model, candidate.provider))
        guard = ResponseGuard()
        try:
            with Deadline(min(deployment.first_token_s, remaining)):
                response = await guard.enter(
                    deployment.upstream.open(PATHS[call.kind], payload, stream=upstream_stream)
                )
                if not upstream_stream:
                    body = await response.read()
                    clock.first_token()
                    started = Started(candidate, clock, guard, body, None, None, attempt, False)
                else:
                    started = await self._until_first_token(
                        candidate, clock, guard, response.chunks(), attempt
                    )
            # A first token: the provider answers. Its circuit hears it now, not when the
            # stream ends: otherwise, while traffic shifts to it, its fast failures (a 500
            # within milliseconds) outrun its successes (a whole stream later) and count as
            # consecutive, and a half-open trial holds the circuit for a whole stream.
            self._note_circuit(call, candidate.provider, Outcome.OK)
            return started
        except UpstreamFailure as raw:
            await guard.close()
            failure = raw.redacted(self._redact)
            self._failed(call, candidate, clock, attempt, failure)
            raise failure from None
        except TimeoutError:
            await guard.close()
            timed_out = UpstreamFailure(
                Outcome.TIMEOUT, f"no first token within {clock.elapsed():.1f} s"
            )
            self._failed(call, candidate, clock, attempt, timed_out)
            raise timed_out from None
        except BaseException:
            # The client went away (or the server is stopping): censored, not an error.
            await guard.close()
            attempt.outcome = Outcome.CANCELLED
            self._record(call, candidate, clock, Outcome.CANCELLED, attempt)
            self._note_circuit(call, candidate.provider, Outcome.CANCELLED)
            self.finish(call, None)
            raise

    async def _until_first_token(
        self,
        candidate: Candidate,
        clock: AttemptClock,
        guard: ResponseGuard,
        chunks: AsyncIterator[bytes],
        attempt: Attempt,
    ) -> Started:
        prelude, splitter = await read_first_token(chunks, clock)
        return Started(candidate, clock, guard, prelude, chunks, splitter, attempt, True)

    def _failed(
        self,
        call: Call,
        candidate: Candidate,
        clock: AttemptClock,
        attempt: Attempt,
        failure: UpstreamFailure,
    ) -> None:
        attempt.outcome = failure.outcome
        attempt.status = failure.status
        attempt.error = failure.message
        attempt.elapsed_s = clock.elapsed()
        pair = Pair(call.model, candidate.provider)
        if failure.outcome is Outcome.RATE_LIMITED:
            wait = failure.retry_after_s if failure.retry_after_s is not None else 1.0
            self._router.note_rate_limited(pair, time.time() + wait)
        if failure.status in CLIENT_FAULT:
            # the client's request was at fault, not the pair: no sample, no failure
            self._note_circuit(call, candidate.provider, Outcome.CANCELLED)
            return
        self._note_circuit(call, candidate.provider, failure.outcome)
        self._record(call, candidate, clock, failure.outcome, attempt)
        log.info(
            "attempt failed: %s on %s: %s (%.3f s)",
            call.model, candidate.provider, failure.message, attempt.elapsed_s,
        )  # fmt: skip

    # -- after the first token -----------------------------------------------------------

    async def relay(
        self, call: Call, started: Started, emit: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """The client's stream: `emit` the prelude, then the rest, whole events at a time;
        closes the upstream on exit. A callback rather than an async generator: one per
        request, and asyncio registers every async generator in a WeakSet on first use."""
        rewrite = ModelRewrite(started.candidate.upstream_model, call.model)
        outcome = Outcome.OK
        try:
            await emit(rewrite(self._screen(started.prelude)))
            chunks, splitter = started.chunks, started.splitter
            assert chunks is not None and splitter is not None
            async for data in chunks:
                events = splitter.feed(data)
                if events:
                    await emit(rewrite(self._screen(events)))
            if splitter.pending.strip():
                await emit(rewrite(self._redact.bytes(splitter.pending) + b"\n\n"))
        except UpstreamFailure as raw:
            failure = raw.redacted(self._redact)
            outcome = Outcome.STREAM_ERROR
            started.attempt.error = failure.message
            log.warning(
                "stream broke after first token: %s on %s: %s",
                call.model, started.candidate.provider, failure.message,
            )  # fmt: skip
            await emit(error_event(_stream_error_body(started.candidate.provider, failure)))
        finally:
            await started.guard.close()
            self._done(call, started, outcome)

    def _screen(self, events: bytes) -> bytes:
        """Forwarded events, with a provider's error event redacted (its text is foreign;
        `"error"` with bare quotes is a JSON key or value, never escaped content)."""
        return self._redact.bytes(events) if b'"error"' in events else events

    async def complete(self, call: Call) -> tuple[Started, bytes]:
        """A whole answer for a stream=false client; a break mid-body fails over too,
        since the client has seen nothing yet."""
        while True:
            started = await self.start(call)
            try:
                body = await self._whole_body(call, started)
            except UpstreamFailure as raw:
                await started.guard.close()
                failure = raw.redacted(self._redact)
                self._failed(call, started.candidate, started.clock, started.attempt, failure)
                continue  # start() skips providers already tried
            except BaseException:
                await started.guard.close()
                self._done(call, started, Outcome.OK)
                raise
            await started.guard.close()
            self._done(call, started, Outcome.OK)
            return started, body

    async def _whole_body(self, call: Call, started: Started) -> bytes:
        if not started.upstream_stream:
            return ModelRewrite(started.candidate.upstream_model, call.model)(started.prelude)
        assert started.chunks is not None and started.splitter is not None
        parts = [started.prelude]
        async for data in started.chunks:
            parts.append(started.splitter.feed(data))
        chunks = [c for c in map(parse_payload, iter_data(b"".join(parts))) if c is not None]
        for chunk in chunks:
            if "error" in chunk and not chunk.get("choices"):
                raise UpstreamFailure(Outcome.STREAM_ERROR, "error event mid-stream")
        answer = assemble_chat(chunks) if call.kind == "chat" else assemble_completion(chunks)
        answer["model"] = call.model
        return orjson.dumps(answer)

    # -- recording -------------------------------------------------------------------------

    def _done(self, call: Call, started: Started, outcome: Outcome) -> None:
        attempt = started.attempt
        attempt.outcome = outcome
        attempt.ttft_s = started.clock.ttft_s
        attempt.elapsed_s = started.clock.elapsed()
        self._record(call, started.candidate, started.clock, outcome, attempt)
        self._note_circuit(call, started.candidate.provider, outcome)
        self.finish(call, started.candidate.provider)

    def _note_circuit(self, call: Call, provider: str, outcome: Outcome) -> None:
        self._router.breakers.on_result(
            Pair(call.model, provider), outcome, time.time(), call.policy.circuit
        )

    def _record(
        self, call: Call, candidate: Candidate, clock: AttemptClock, outcome: Outcome,
        attempt: Attempt,
    ) -> None:  # fmt: skip
        sample = clock.sample(
            call.model, candidate.provider, outcome,
            prompt_tokens=call.prompt_tokens, replica=self._replica,
        )  # fmt: skip
        attempt.elapsed_s = clock.elapsed()
        self.record_sample(sample)

    def record_sample(self, sample: Sample) -> None:
        self._buffer.add_sample(sample)
        self._metrics.record_sample(sample)

    def finish(self, call: Call, winner: str | None) -> None:
        """The request is over: log its decision (exactly once)."""
        if call.finished:
            return
        call.finished = True
        decision = call.decision
        decision.winner = winner
        if len(decision.attempts) > 1:
            self._metrics.failovers.labels(call.model).inc()
        self._buffer.add_decision(decision)


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


def _upstream_body(call: Call, upstream_model: str, upstream_stream: bool) -> bytes:
    body = call.body
    body["model"] = upstream_model
    if upstream_stream and not call.stream:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)


def _upstream_message(failure: UpstreamFailure) -> str:
    try:
        parsed = orjson.loads(failure.body)
        message = parsed["error"]["message"]
        if isinstance(message, str):
            return f"provider rejected the request: {message}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return f"provider rejected the request: {failure.message}"


def _stream_error_body(provider: str, failure: UpstreamFailure) -> dict[str, Any]:
    return {
        "error": {
            "message": f"upstream stream from {provider} broke after the first token: "
            f"{failure.message}",
            "type": "api_error",
            "param": None,
            "code": "upstream_stream_error",
        }
    }


def _unavailable(decision: Decision, router: Router, now: float) -> ProxyError:
    limits = router.rate_limited_until
    pairs = [Pair(decision.model, c.provider) for c in decision.excluded]
    waits = [limits.get(pair, 0.0) - now for pair in pairs]
    if waits and all(w > 0 for w in waits):
        return RateLimited(
            f"every provider of '{decision.model}' is rate-limited: {decision.reason}",
            retry_after_s=min(waits),
        )
    states = router.breakers.states
    if any(pair in states for pair in pairs):
        return NoProviderAvailable(
            f"model '{decision.model}': {decision.reason}",
            retry_after_s=retry_after_s(states, pairs, now),
        )
    return NoProviderAvailable(f"model '{decision.model}': {decision.reason}")


def _all_failed(call: Call, failures: list[UpstreamFailure]) -> ProxyError:
    detail = (
        "; ".join(f"{a.provider}: {a.error}" for a in call.decision.attempts if a.error)
        or "no attempt fitted in the deadline"
    )
    if failures and all(f.outcome is Outcome.RATE_LIMITED for f in failures):
        waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
        return RateLimited(
            f"every provider of '{call.model}' answered 429: {detail}",
            retry_after_s=min(waits) if waits else 1.0,
        )
    if failures and all(f.outcome is Outcome.TIMEOUT for f in failures):
        return UpstreamTimeout(f"no provider of '{call.model}' answered in time: {detail}")
    return UpstreamFailed(f"every provider of '{call.model}' failed: {detail}")
