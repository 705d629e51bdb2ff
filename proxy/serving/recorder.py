"""Recording what dispatch did: every attempt's sample, routing's events, every request's
decision once, and the counters beside them. Built once per app (app.py).

Never awaited: samples and decisions go into the bounded local buffer (a background
flusher writes them to the store), events to the routing component (which owns circuits,
rate limits and affinity), counters into the app's Prometheus registry.
"""

from __future__ import annotations

import logging
import time

from proxy.core.domain import Attempt, Candidate, Decision, Outcome, Pair, Sample
from proxy.learning.store.buffer import SampleBuffer
from proxy.routing import AttemptEnded, AttemptStarted, FirstToken, Routing, Served
from proxy.serving.call import Call
from proxy.telemetry.metrics import Metrics
from proxy.upstream.base import UpstreamFailure
from proxy.upstream.measure import AttemptClock

log = logging.getLogger("ttft_router.dispatch")


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
        self._routing.observe(AttemptStarted(Pair(call.model, candidate.provider)))
        return attempt

    def first_token(self, call: Call, candidate: Candidate) -> None:
        self._routing.observe(FirstToken(Pair(call.model, candidate.provider)))

    def attempt_ended(
        self, call: Call, candidate: Candidate, clock: AttemptClock, attempt: Attempt,
        outcome: Outcome,
    ) -> None:  # fmt: skip
        """An attempt is over (after its first token, or cut off before it): its sample."""
        attempt.outcome = outcome
        attempt.ttft_s = clock.ttft_s
        self._ended(call, candidate, clock, attempt, outcome, None, client_fault=False)

    def attempt_failed(
        self, call: Call, candidate: Candidate, clock: AttemptClock, attempt: Attempt,
        failure: UpstreamFailure, *, client_fault: bool,
    ) -> None:  # fmt: skip
        """An attempt failed (`failure` already redacted). A client's fault gives no sample
        and counts nothing against the pair."""
        attempt.outcome = failure.outcome
        attempt.status = failure.status
        attempt.error = failure.message
        self._ended(call, candidate, clock, attempt, failure.outcome, failure.retry_after_s,
                    client_fault=client_fault)  # fmt: skip
        if not client_fault:
            log.info(
                "attempt failed: %s on %s: %s (%.3f s)",
                call.model, candidate.provider, failure.message, attempt.elapsed_s,
            )  # fmt: skip

    def _ended(
        self, call: Call, candidate: Candidate, clock: AttemptClock, attempt: Attempt,
        outcome: Outcome, retry_after_s: float | None, *, client_fault: bool,
    ) -> None:  # fmt: skip
        attempt.elapsed_s = clock.elapsed()
        if not client_fault:
            self.sample(
                clock.sample(call.model, candidate.provider, outcome,
                             prompt_tokens=call.prompt_tokens, replica=self.replica)
            )  # fmt: skip
        pair = Pair(call.model, candidate.provider)
        self._routing.observe(AttemptEnded(pair, outcome, time.time(), retry_after_s, client_fault))

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
