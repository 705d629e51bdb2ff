"""Recording what dispatch did: every attempt's sample and circuit note, every request's
decision once, and the counters beside them. Built once per app (app.py).

Never awaited: samples and decisions go into the bounded local buffer (a background
flusher writes them to the store), counters into the app's Prometheus registry.
"""

from __future__ import annotations

import time

from proxy.core.domain import Decision, Outcome, Pair, Sample
from proxy.learning.store.buffer import SampleBuffer
from proxy.routing.circuit import Breakers
from proxy.settings.policy import Circuit
from proxy.telemetry.metrics import Metrics


class Recorder:
    __slots__ = ("_breakers", "_buffer", "_metrics", "replica")

    def __init__(
        self, buffer: SampleBuffer, breakers: Breakers, metrics: Metrics, replica: str
    ) -> None:
        self._buffer = buffer
        self._breakers = breakers
        self._metrics = metrics
        self.replica = replica

    def attempt_started(self, pair: Pair) -> None:
        self._breakers.on_start(pair)

    def first_token(self, pair: Pair) -> None:
        self._breakers.on_first_token(pair)

    def attempt_ended(
        self, pair: Pair, outcome: Outcome, circuit: Circuit, sample: Sample | None
    ) -> None:
        """One attempt is over: its sample (None when the request, not the pair, was at
        fault) and its effect on the pair's circuit."""
        if sample is not None:
            self.sample(sample)
        self._breakers.on_result(pair, outcome, time.time(), circuit)

    def sample(self, sample: Sample) -> None:
        self._buffer.add_sample(sample)
        self._metrics.record_sample(sample)

    def decision(self, decision: Decision) -> None:
        """The request is over (the caller makes sure this happens once per request)."""
        if len(decision.attempts) > 1:
            self._metrics.failovers.labels(decision.model).inc()
        hedge = decision.hedge
        if hedge is not None:
            self._metrics.count_hedge(decision.model, hedge)
        self._metrics.count_decision(decision)
        if decision.cost_usd is not None or decision.controls:
            self._metrics.count_cost(decision)
        self._buffer.add_decision(decision)
