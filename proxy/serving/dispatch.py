"""The attempt race: failover before the first token, hedging, deadlines.

For each request dispatch walks the ranked candidates: an attempt that fails before its
first token (connect error, timeout, 5xx, 429, other provider-side 4xx) costs the client
nothing and the next candidate is tried, within the policy's total deadline and attempt
limit. With hedging on (policy `hedge`), an attempt that has no first token after the hedge
delay gets the next candidate beside it, within a budget; the first to produce output wins
and the other is closed at once, recorded as censored at that moment. Each attempt yields
exactly one Sample and one Attempt in the decision (proxy.serving.recorder); the winner's bytes are
moved by proxy.serving.forward.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from proxy.core.domain import Attempt, Candidate, Decision, HedgeRecord, Outcome, Pair
from proxy.core.errors import (
    NoProviderAvailable,
    ProxyError,
    RateLimited,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from proxy.core.timers import Deadline
from proxy.routing.circuit import retry_after_s
from proxy.routing.ranking import Router
from proxy.serving.forward import ResponseGuard, Started, relay, whole_body
from proxy.serving.hedge import HedgeBudget, HedgeBudgets, expected_saving, hedge_delay
from proxy.serving.metering import Meter
from proxy.serving.recorder import Recorder
from proxy.settings.policy import ModelPolicy
from proxy.upstream.base import Upstream, UpstreamFailure
from proxy.upstream.measure import AttemptClock, read_first_token
from proxy.upstream.redact import Redactor
from proxy.upstream.sse import CHAT, RESPONSES, StreamGrammar

log = logging.getLogger("ttft_router.dispatch")

Kind = Literal["chat", "completion", "embedding", "responses"]
PATHS: dict[Kind, str] = {
    "chat": "/chat/completions",
    "completion": "/completions",
    "embedding": "/embeddings",
    "responses": "/responses",
}
# How each endpoint's stream says "output" and "error" (the first-token detector).
GRAMMARS: dict[Kind, StreamGrammar] = {
    "chat": CHAT, "completion": CHAT, "embedding": CHAT, "responses": RESPONSES,
}  # fmt: skip
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
    began: float = 0.0  # perf_counter() time the first attempt started
    finished: bool = False
    meter: Meter | None = None  # a priced model: ask for usage, cost the answer (metering)
    bind: Callable[[str], None] | None = None  # told the winner (an affinity key's binding)


@dataclass(frozen=True, slots=True)
class ProviderUpstream:
    """How dispatch reaches one provider."""

    upstream: Upstream
    first_token_s: float
    streams_for_non_stream: bool


class Dispatcher:
    def __init__(
        self,
        upstreams: Mapping[str, ProviderUpstream],
        recorder: Recorder,
        router: Router,
        redact: Redactor,
    ) -> None:
        self._upstreams = upstreams
        self._recorder = recorder
        self._router = router
        self._redact = redact
        self.hedge_budgets = HedgeBudgets()

    # -- the attempt race ---------------------------------------------------------------

    async def start(self, call: Call) -> Started:
        """Try candidates until one yields a first token. Raises ProxyError."""
        decision = call.decision
        if not decision.ranked:
            self._finish(call, None)
            raise _unavailable(decision, self._router, time.time())
        if not call.deadline:
            call.began = time.perf_counter()
            call.deadline = call.began + call.policy.failover.total_deadline_s
        tried = {a.provider for a in decision.attempts}
        budget = call.policy.failover.max_attempts - len(decision.attempts)
        untried = [c for c in decision.ranked if c.provider not in tried][: max(budget, 0)]
        try:
            if call.policy.hedge.enabled and not decision.attempts and call.kind != "embedding":
                return await self._race(call, untried)
            return await self._in_turn(call, untried)
        except BaseException:
            self._finish(call, None)
            raise

    async def _in_turn(self, call: Call, untried: list[Candidate]) -> Started:
        failures: list[UpstreamFailure] = []
        for candidate in untried:
            remaining = call.deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                return await self._attempt(call, candidate, remaining)
            except UpstreamFailure as failure:
                failures.append(failure)
                _raise_if_client_fault(failure)
        raise _all_failed(call, failures)

    async def _race(self, call: Call, queue: list[Candidate]) -> Started:
        """Like `_in_turn`, but an attempt without a first token after the hedge delay gets
        the next candidate beside it (budget and `max_hedges` allowing)."""
        policy = call.policy.hedge
        budget = self.hedge_budgets.for_model(call.model, policy)
        budget.note_request(time.monotonic())
        primary = queue[0]
        busy = self._router.breakers.pending.get(Pair(call.model, primary.provider), 0) > 0
        delay = hedge_delay(policy, primary.score, time.time(), busy)
        record = call.decision.hedge = HedgeRecord(
            primary.provider, delay.seconds, delay.basis, delay.kind
        )
        every_s = max(delay.seconds, policy.min_delay_s)  # a further hedge: never at once
        racing: dict[asyncio.Task[Started], Candidate] = {}
        failures: list[UpstreamFailure] = []
        hedges_left = policy.max_hedges if len(queue) > 1 else 0

        def launch(hedge: bool) -> None:
            candidate = queue.pop(0)
            remaining = call.deadline - time.perf_counter()
            racing[asyncio.ensure_future(self._attempt(call, candidate, remaining, hedge))] = (
                candidate
            )

        try:
            launch(False)
            hedge_at = time.perf_counter() + delay.seconds
            while racing:
                wait = hedge_at - time.perf_counter() if hedges_left and queue else None
                done, _ = await asyncio.wait(
                    racing, timeout=max(wait, 0.0) if wait is not None else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                if not done:  # the hedge delay passed with no first token
                    hedges_left = self._hedge(call, budget, record, hedges_left, launch)
                    hedge_at = time.perf_counter() + every_s
                    continue
                winner = await self._settle(call, done, racing, failures)
                if winner is not None:
                    if record.fired:
                        record.winner = winner.candidate.provider
                        record.winner_ttft_s = round(
                            winner.attempt.started_s + (winner.clock.ttft_s or 0.0), 6
                        )
                    return winner
                if not racing and queue and call.deadline > time.perf_counter():
                    launch(False)  # plain failover: nothing is left in the race
                    hedge_at = time.perf_counter() + every_s
        finally:
            await self._close_losers(call, racing)
        raise _all_failed(call, failures)

    def _hedge(
        self, call: Call, budget: HedgeBudget, record: HedgeRecord, left: int,
        launch: Callable[[bool], None],
    ) -> int:  # fmt: skip
        if call.deadline <= time.perf_counter():
            return 0
        if not budget.try_spend(time.monotonic()):
            record.skipped = (
                f"hedge budget spent ({budget.share:.0%} of requests per {budget.window_s:g} s)"
            )
            return 0
        record.fired, record.skipped = True, None
        launch(True)
        return left - 1

    async def _settle(
        self,
        call: Call,
        done: set[asyncio.Task[Started]],
        racing: dict[asyncio.Task[Started], Candidate],
        failures: list[UpstreamFailure],
    ) -> Started | None:
        """Take the finished attempts out of the race: the first with a first token wins
        (any other that also has one is closed); failures are kept, a client fault raised."""
        winner: Started | None = None
        for task in sorted(done, key=lambda t: t.cancelled() or t.exception() is not None):
            racing.pop(task)
            if task.cancelled():
                continue
            error = task.exception()
            if error is None:
                started = task.result()
                if winner is None:
                    winner = started
                else:
                    await self._drop(call, started)
            elif isinstance(error, UpstreamFailure):
                failures.append(error)
                if winner is None:
                    _raise_if_client_fault(error)
            else:
                raise error
        return winner

    async def _close_losers(
        self, call: Call, racing: dict[asyncio.Task[Started], Candidate]
    ) -> None:
        """Cancel what is still racing (each records itself as censored) and wait for it."""
        if not racing:
            return
        for task in racing:
            task.cancel()
        results = await asyncio.gather(*racing, return_exceptions=True)
        for result in results:
            if isinstance(result, Started):  # it got its first token as it was cancelled
                await self._drop(call, result)
        record = call.decision.hedge
        if record is not None and record.fired:
            waited = [a.elapsed_s for a in call.decision.attempts if a.outcome is Outcome.CANCELLED]
            record.loser_censored_at_s = round(max(waited), 6) if waited else None
            _saving(call.decision, record)

    async def _drop(self, call: Call, started: Started) -> None:
        """An attempt that reached its first token but lost: its sample is real, it is closed."""
        await started.guard.close()
        self._ended(call, started, Outcome.OK)

    async def _attempt(
        self, call: Call, candidate: Candidate, remaining: float, hedge: bool = False
    ) -> Started:
        provider = self._upstreams[candidate.provider]
        upstream_stream = call.stream or (
            call.kind != "embedding" and provider.streams_for_non_stream
        )
        payload = _upstream_body(call, candidate.upstream_model, upstream_stream)
        clock = AttemptClock()
        attempt = Attempt(candidate.provider, Outcome.OK, hedge=hedge)
        if call.began:
            attempt.started_s = clock.started - call.began
        call.decision.attempts.append(attempt)
        pair = Pair(call.model, candidate.provider)
        self._recorder.attempt_started(pair)
        guard = ResponseGuard()
        try:
            with Deadline(min(provider.first_token_s, remaining)):
                response = await guard.enter(
                    provider.upstream.open(PATHS[call.kind], payload, stream=upstream_stream)
                )
                if not upstream_stream:
                    body = await response.read()
                    clock.first_token()
                    started = Started(candidate, clock, guard, body, None, None, attempt, False)
                else:
                    chunks = response.chunks()
                    prelude, splitter = await read_first_token(chunks, clock, GRAMMARS[call.kind])
                    started = Started(
                        candidate, clock, guard, prelude, chunks, splitter, attempt, True
                    )
            self._recorder.first_token(pair)
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
            # The client went away, the server is stopping, or this attempt lost a hedge
            # race: censored at this moment, not an error.
            await guard.close()
            attempt.outcome = Outcome.CANCELLED
            attempt.elapsed_s = clock.elapsed()
            self._note(call, candidate, clock, Outcome.CANCELLED, attempt)
            raise

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
            self._recorder.attempt_ended(pair, Outcome.CANCELLED, call.policy.circuit, None)
            return
        self._note(call, candidate, clock, failure.outcome, attempt)
        log.info(
            "attempt failed: %s on %s: %s (%.3f s)",
            call.model, candidate.provider, failure.message, attempt.elapsed_s,
        )  # fmt: skip

    # -- after the first token -----------------------------------------------------------

    async def relay(
        self, call: Call, started: Started, emit: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """The client's stream (proxy.serving.forward.relay); closes the upstream and records."""
        outcome = Outcome.OK
        tap = call.meter.tap if call.meter is not None else None
        try:
            outcome = await relay(started, call.model, self._redact, emit, GRAMMARS[call.kind], tap)
        finally:
            await started.guard.close()
            _cost(call, started)
            self._done(call, started, outcome)

    async def complete(self, call: Call) -> tuple[Started, bytes]:
        """A whole answer for a stream=false client; a break mid-body fails over too,
        since the client has seen nothing yet."""
        while True:
            started = await self.start(call)
            try:
                tap = call.meter.tap if call.meter is not None else None
                body = await whole_body(started, call.kind, call.model, tap)
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
            _cost(call, started)
            self._done(call, started, Outcome.OK)
            return started, body

    # -- recording -------------------------------------------------------------------------

    def _done(self, call: Call, started: Started, outcome: Outcome) -> None:
        self._ended(call, started, outcome)
        self._finish(call, started.candidate.provider)

    def _ended(self, call: Call, started: Started, outcome: Outcome) -> None:
        attempt = started.attempt
        attempt.outcome = outcome
        attempt.ttft_s = started.clock.ttft_s
        self._note(call, started.candidate, started.clock, outcome, attempt)

    def _note(
        self, call: Call, candidate: Candidate, clock: AttemptClock, outcome: Outcome,
        attempt: Attempt,
    ) -> None:  # fmt: skip
        sample = clock.sample(
            call.model, candidate.provider, outcome,
            prompt_tokens=call.prompt_tokens, replica=self._recorder.replica,
        )  # fmt: skip
        attempt.elapsed_s = clock.elapsed()
        pair = Pair(call.model, candidate.provider)
        self._recorder.attempt_ended(pair, outcome, call.policy.circuit, sample)

    def _finish(self, call: Call, winner: str | None) -> None:
        """The request is over: log its decision (exactly once)."""
        if call.finished:
            return
        call.finished = True
        call.decision.winner = winner
        if call.bind is not None and winner is not None:
            call.bind(winner)
        self._recorder.decision(call.decision)


def _saving(decision: Decision, record: HedgeRecord) -> None:
    """The hedge's estimated saving (proxy.serving.hedge.expected_saving) when a hedge won."""
    if record.winner in (None, record.primary) or record.winner_ttft_s is None:
        return
    primary = next((c for c in decision.ranked if c.provider == record.primary), None)
    waited = next(
        (a.elapsed_s for a in decision.attempts if a.provider == record.primary and not a.hedge),
        None,
    )
    if primary is not None and waited is not None:
        saved = expected_saving(primary.score, record.kind, waited, record.winner_ttft_s)
        record.saved_s = round(saved, 6)


def _cost(call: Call, started: Started) -> None:
    """The answer's cost from the usage it reported (metering), into the decision."""
    if call.meter is not None:
        call.decision.cost_usd = call.meter.cost_usd(started.candidate.provider)


def _raise_if_client_fault(failure: UpstreamFailure) -> None:
    if failure.status in CLIENT_FAULT:
        raise UpstreamRejected(_upstream_message(failure), status=failure.status) from None


def _upstream_body(call: Call, upstream_model: str, upstream_stream: bool) -> bytes:
    body = call.body
    body["model"] = upstream_model
    if upstream_stream and not call.stream:
        if call.kind == "responses":  # its stream ends with the whole response, usage in it
            body = {**body, "stream": True}
        else:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    elif (
        call.stream and call.meter is not None and call.meter.tap.strip and call.kind != "responses"
    ):
        # metered on the client's behalf: its usage chunk is dropped again (metering)
        options = body.get("stream_options")
        options = {**options, "include_usage": True} if isinstance(options, dict) else None
        body = {**body, "stream_options": options or {"include_usage": True}}
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
