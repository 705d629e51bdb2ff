"""Dispatch: failover before the first token, deadlines, and the answer after it.

For each request dispatch walks the ranked candidates: an attempt that fails before its
first token (connect error, timeout, 5xx, 429, other provider-side 4xx) costs the client
nothing and the next candidate is tried, within the policy's total deadline and attempt
limit. With hedging on (policy `hedge`) the attempts race instead (serving.race). Each
attempt yields exactly one Sample and one Attempt in the decision (serving.recorder); the
winner's bytes are moved by serving.forward; the endpoint (serving.endpoint) says what is
sent upstream and how an answer is read.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from proxy.core.domain import Attempt, Candidate, Outcome, Pair
from proxy.core.timers import Deadline
from proxy.learning.coldness import describe
from proxy.serving.call import Call
from proxy.serving.failures import all_failed, fault_of, raise_if_client_fault, unavailable
from proxy.serving.forward import ResponseGuard, Started, relay, whole_body
from proxy.serving.hedge import HedgeBudget, HedgeBudgets, HedgeDelay
from proxy.serving.race import HedgeRace, RacePlan
from proxy.serving.recorder import Recorder
from proxy.upstream.base import Upstream, UpstreamFailure
from proxy.upstream.measure import AttemptClock, read_first_token
from proxy.upstream.redact import Redactor


@dataclass(frozen=True, slots=True)
class ProviderUpstream:
    """How dispatch reaches one provider."""

    upstream: Upstream
    first_token_s: float
    streams_for_non_stream: bool
    extra_fields: frozenset[str] = frozenset()  # fields beyond OpenAI's it takes (config)


class Dispatcher:
    def __init__(
        self,
        upstreams: Mapping[str, ProviderUpstream],
        recorder: Recorder,
        redact: Redactor,
    ) -> None:
        self._upstreams = upstreams
        self._recorder = recorder
        self._redact = redact
        self.hedge_budgets = HedgeBudgets()

    # -- until the first token ----------------------------------------------------------

    async def start(self, call: Call) -> Started:
        """Try candidates until one yields a first token. Raises ProxyError."""
        decision = call.decision
        if not decision.ranked:
            self._recorder.finish(call, None)
            raise unavailable(decision, call.blocked)
        if not call.deadline:
            call.began = time.perf_counter()
            call.deadline = call.began + call.policy.failover.total_deadline_s
        tried = {a.provider for a in decision.attempts}
        left = call.max_attempts - len(decision.attempts)
        untried = [c for c in decision.ranked if c.provider not in tried][: max(left, 0)]
        budget = self.hedge_budgets.for_model(call.model, call.policy.hedge)
        if not decision.attempts:  # every request counts toward the share hedges may take
            budget.note_request(time.monotonic())
        try:
            if call.policy.hedge.enabled and not decision.attempts and call.hedgeable:
                busy = self._recorder.pending(Pair(call.model, untried[0].provider)) > 0
                plan = RacePlan.hedging(call, budget, busy)
                return await self._race(call, untried, plan)
            return await self._in_turn(call, untried, budget)
        except BaseException:
            self._recorder.finish(call, None)
            raise

    async def _in_turn(self, call: Call, untried: list[Candidate], budget: HedgeBudget) -> Started:
        failures: list[UpstreamFailure] = []
        for i, candidate in enumerate(untried):
            remaining = call.deadline - time.perf_counter()
            if remaining <= 0:
                break
            if i > 0 and call.hedgeable:
                race = self._cold_race(call, untried[i:], budget)
                if race is not None:
                    return await self._race(call, untried[i:], race, failures)
            try:
                return await self._attempt(call, candidate, remaining)
            except UpstreamFailure as failure:
                failures.append(failure)
                raise_if_client_fault(failure)
        raise all_failed(call.decision, failures)

    def _cold_race(self, call: Call, rest: list[Candidate], budget: HedgeBudget) -> RacePlan | None:
        """A failover whose next candidate is probably cold (its ColdModel, learning.coldness)
        races it with the one after at once, when the policy and the hedge budget allow: an
        outage then waits for the first of two cold starts, or a warm answer, not for one
        cold start per request."""
        policy = call.policy
        if not policy.failover.race_cold or len(rest) < 2:
            return None
        cold = rest[0].score.cold
        now = time.time()
        busy = self._recorder.pending(Pair(call.model, rest[0].provider)) > 0
        if cold is None or cold.chance(now, busy) < policy.hedge.cold_chance:
            return None
        if not budget.try_spend(time.monotonic()):
            return None
        basis = f"failover to {describe(rest[0].provider, cold, now, busy)}: racing the next"
        return RacePlan(HedgeDelay(0.0, basis, "cold"), policy.hedge.min_delay_s, 1, budget,
                        spent=True)  # fmt: skip

    async def _race(
        self, call: Call, queue: list[Candidate], plan: RacePlan,
        failures: list[UpstreamFailure] | None = None,
    ) -> Started:  # fmt: skip
        async def attempt(candidate: Candidate, remaining: float, hedge: bool) -> Started:
            return await self._attempt(call, candidate, remaining, hedge)

        async def drop(started: Started) -> None:
            await self._drop(call, started)

        return await HedgeRace(call, queue, attempt, drop, plan, failures).run()

    async def _drop(self, call: Call, started: Started) -> None:
        """An attempt that reached its first token but lost: its sample is real, it is closed."""
        await started.guard.close()
        self._recorder.attempt_ended(
            call, started.candidate, started.clock, started.attempt, Outcome.OK
        )

    async def _attempt(
        self, call: Call, candidate: Candidate, remaining: float, hedge: bool = False
    ) -> Started:
        provider = self._upstreams[candidate.provider]
        endpoint = call.endpoint
        upstream_stream = call.stream or (endpoint.streams and provider.streams_for_non_stream)
        payload = endpoint.upstream_body(
            call.body, candidate.upstream_model, upstream_stream=upstream_stream,
            client_stream=call.stream, wants_usage=call.meter is not None and call.meter.tap.strip,
            omit=call.admitted.omit_for(provider.extra_fields),
        )  # fmt: skip
        clock = AttemptClock()
        attempt = self._recorder.attempt_started(call, candidate, hedge)
        if call.began:
            attempt.started_s = clock.started - call.began
        guard = ResponseGuard()
        try:
            with Deadline(min(provider.first_token_s, remaining)):
                response = await guard.enter(
                    provider.upstream.open(endpoint.path, payload, stream=upstream_stream)
                )
                if not upstream_stream:
                    body = await response.read()
                    clock.first_token()
                    started = Started(candidate, clock, guard, body, None, None, attempt, False)
                else:
                    chunks = response.chunks()
                    prelude, splitter = await read_first_token(chunks, clock, endpoint.grammar)
                    started = Started(
                        candidate, clock, guard, prelude, chunks, splitter, attempt, True
                    )
            self._recorder.first_token(call, candidate, attempt)
            return started
        # Each way out records the attempt before closing it: a second cancel during the
        # close must not leave the attempt unrecorded (routing would count it in flight).
        except UpstreamFailure as raw:
            failure = raw.redacted(self._redact)
            self._failed(call, candidate, clock, attempt, failure)
            await guard.close()
            raise failure from None
        except TimeoutError:
            timed_out = UpstreamFailure(
                Outcome.TIMEOUT, f"no first token within {clock.elapsed():.1f} s"
            )
            self._failed(call, candidate, clock, attempt, timed_out)
            await guard.close()
            raise timed_out from None
        except BaseException:
            # The client went away, the server is stopping, or this attempt lost a hedge
            # race: censored at this moment, not an error.
            self._recorder.attempt_ended(call, candidate, clock, attempt, Outcome.CANCELLED)
            await guard.close()
            raise

    def _failed(
        self, call: Call, candidate: Candidate, clock: AttemptClock, attempt: Attempt,
        failure: UpstreamFailure,
    ) -> None:  # fmt: skip
        fault = fault_of(failure, call.prompt_tokens, call.policy.circuit)
        self._recorder.attempt_failed(call, candidate, clock, attempt, failure, fault)

    # -- after the first token -----------------------------------------------------------

    async def relay(
        self, call: Call, started: Started, emit: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """The client's stream (serving.forward.relay); closes the upstream and records."""
        outcome = Outcome.OK
        tap = call.meter.tap if call.meter is not None else None
        try:
            grammar = call.endpoint.grammar
            outcome = await relay(started, call.model, self._redact, emit, grammar, tap)
        finally:
            self._done(call, started, outcome)  # recorded before the close can be cancelled
            await started.guard.close()

    async def complete(self, call: Call) -> tuple[Started, bytes]:
        """A whole answer for a stream=false client; a break mid-body fails over too,
        since the client has seen nothing yet."""
        while True:
            started = await self.start(call)
            try:
                tap = call.meter.tap if call.meter is not None else None
                body = await whole_body(started, call.endpoint.assembly, call.model, tap,
                                        call.endpoint.grammar)  # fmt: skip
            except UpstreamFailure as raw:
                failure = raw.redacted(self._redact)
                self._failed(call, started.candidate, started.clock, started.attempt, failure)
                await started.guard.close()
                raise_if_client_fault(failure)  # an error that blames the prompt: no failover
                continue  # start() skips providers already tried
            except BaseException:
                self._done(call, started, Outcome.OK)
                await started.guard.close()
                raise
            self._done(call, started, Outcome.OK)
            await started.guard.close()
            return started, body

    def _done(self, call: Call, started: Started, outcome: Outcome) -> None:
        """The winner's answer is over: its cost, its sample, the decision."""
        if call.meter is not None:
            call.decision.cost_usd = call.meter.cost_usd(started.candidate.provider)
        self._recorder.attempt_ended(call, started.candidate, started.clock, started.attempt,
                                     outcome)  # fmt: skip
        self._recorder.finish(call, started.candidate.provider)
