"""Recording what dispatch did: every attempt's sample, routing's events, every request's
decision once, and the counters beside them. Built once per app (app.py).

Never awaited: samples and decisions go into the bounded local buffer (a background
flusher writes them to the store), events to the routing component (which owns circuits,
rate limits and affinity), counters into the app's Prometheus registry.
"""

from __future__ import annotations

import logging
import math
import time

from proxy.core.domain import Attempt, Candidate, Decision, Outcome, Pair, Sample, Source
from proxy.learning.store.buffer import SampleBuffer
from proxy.routing import AttemptEnded, AttemptStarted, FirstToken, Routing, Served
from proxy.serving.call import Call
from proxy.serving.failures import PAIR_FAULT, Fault
from proxy.serving.metering import request_cost
from proxy.telemetry.metrics import Metrics
from proxy.upstream.base import UpstreamFailure
from proxy.upstream.measure import AttemptClock

log = logging.getLogger("ttft_router.dispatch")


def _cold_like_after_s(call: Call, candidate: Candidate) -> float:
    """How long an attempt may go without a first token before it looks like a cold start:
    the policy's threshold (above `factor` x the pair's median and above `floor_s`), the
    median moved to the request's prompt size (the pair's prefill line, or the prior's).
    A request the client placed (steered) never makes its pair look late to others."""
    if call.steered:
        return math.inf
    cold = call.policy.cold_start
    score = candidate.score
    expected = score.median or 0.0
    if score.prefill is not None:  # identified, or at the prior's slope
        expected = max(expected, score.prefill.predict_s(call.prompt_tokens))
    return max(cold.floor_s, cold.factor * expected)


def _prompt_tokens(call: Call) -> int:
    """The prompt's size: the provider's own count when its answer reported usage (the
    winner's, when the model is priced and metered), else the request's estimate."""
    meter = call.meter
    reported = meter.tap.usage.prompt_tokens if meter is not None else None
    return reported if reported is not None else call.prompt_tokens


class Recorder:
    __slots__ = ("_buffer", "_metrics", "_routing", "replica")

    def __init__(
        self, buffer: SampleBuffer, routing: Routing, metrics: Metrics, replica: str
    ) -> None:
        self._buffer = buffer
        self._routing = routing
        self._metrics = metrics
        self.replica = replica

    def pending(self, pair: Pair) -> int:
        """Attempts sent to `pair` whose result the scores do not hold yet (routing's)."""
        return self._routing.pending(pair)

    def attempt_started(self, call: Call, candidate: Candidate, hedge: bool) -> Attempt:
        """A new attempt of `call` on `candidate`: its Attempt in the decision."""
        attempt = Attempt(candidate.provider, Outcome.OK, hedge=hedge)
        call.decision.attempts.append(attempt)
        pair = Pair(call.model, candidate.provider)
        now = time.time()
        slow_at = now + _cold_like_after_s(call, candidate)
        self._routing.observe(AttemptStarted(pair, id(attempt), slow_at, now))
        return attempt

    def first_token(self, call: Call, candidate: Candidate, attempt: Attempt) -> None:
        self._routing.observe(FirstToken(Pair(call.model, candidate.provider), id(attempt)))

    def attempt_ended(
        self, call: Call, candidate: Candidate, clock: AttemptClock, attempt: Attempt,
        outcome: Outcome,
    ) -> None:  # fmt: skip
        """An attempt is over (after its first token, or cut off before it): its sample."""
        attempt.outcome = outcome
        attempt.ttft_s = clock.ttft_s
        self._ended(call, candidate, clock, attempt, outcome, None, PAIR_FAULT)

    def attempt_failed(
        self, call: Call, candidate: Candidate, clock: AttemptClock, attempt: Attempt,
        failure: UpstreamFailure, fault: Fault,
    ) -> None:  # fmt: skip
        """An attempt failed (`failure` already redacted). What the request caused counts
        nothing against the pair (`fault`, serving.failures); it is counted apart."""
        attempt.outcome = failure.outcome
        attempt.status = failure.status
        attempt.error = failure.message
        self._ended(call, candidate, clock, attempt, failure.outcome, failure.retry_after_s,
                    fault)  # fmt: skip
        if fault.pair:
            log.info(
                "attempt failed: %s on %s: %s (%.3f s)",
                call.model, candidate.provider, failure.message, attempt.elapsed_s,
            )  # fmt: skip
        else:
            self._metrics.request_faults.labels(call.model, candidate.provider, fault.kind).inc()

    def _ended(
        self, call: Call, candidate: Candidate, clock: AttemptClock, attempt: Attempt,
        outcome: Outcome, retry_after_s: float | None, fault: Fault,
    ) -> None:  # fmt: skip
        attempt.elapsed_s = clock.elapsed()
        if fault.sample:
            self.sample(
                clock.sample(call.model, candidate.provider, outcome,
                             source=Source.STEERED if call.steered else Source.PASSIVE,
                             prompt_tokens=_prompt_tokens(call), replica=self.replica,
                             client=call.decision.client)
            )  # fmt: skip
        pair = Pair(call.model, candidate.provider)
        self._routing.observe(
            AttemptEnded(pair, outcome, time.time(), retry_after_s, not fault.pair, id(attempt))
        )

    def sample(self, sample: Sample) -> None:
        self._buffer.add_sample(sample)
        self._metrics.record_sample(sample)

    def finish(self, call: Call, winner: str | None) -> None:
        """The request is over: its decision is logged and counted, exactly once."""
        if call.finished:
            return
        call.finished = True
        decision = call.decision
        decision.winner = winner
        decision.charged_usd = request_cost(decision, call.meter, _prompt_tokens(call))
        if call.affinity_key is not None and winner is not None:
            self._routing.observe(Served(call.model, call.affinity_key, winner, time.time()))
        self.decision(decision)

    def decision(self, decision: Decision) -> None:
        if len(decision.attempts) > 1:
            self._metrics.failovers.labels(decision.model).inc()
        hedge = decision.hedge
        if hedge is not None:
            self._metrics.count_hedge(decision.model, hedge)
        self._metrics.count_decision(decision)
        if decision.cost_usd is not None or decision.controls:
            self._metrics.count_cost(decision)
        self._buffer.add_decision(decision)
