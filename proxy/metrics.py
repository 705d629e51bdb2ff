"""Prometheus collectors, declared once per app on the app's own registry.

Per-request work is two calls (an attempt counter and a TTFT histogram) on label children
cached here by their label values: prometheus_client's `labels()` validates and locks on every
call (~5 us per sample, measured by benchmarks/micro.py); a dict lookup does not. The caches
hold exactly the children the registry holds. Everything derived from the scoreboard, buffer
and store is read at scrape time by a custom collector, so it costs the request path nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.domain import Sample

if TYPE_CHECKING:
    from proxy.domain import Pair
    from proxy.prober import Prober
    from proxy.scoreboard import Scoreboard
    from proxy.store.base import Store
    from proxy.store.buffer import SampleBuffer

TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 55, 90)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.attempts = Counter(
            "ttft_router_attempts", "Upstream attempts by outcome",
            ["model", "provider", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "ttft_router_ttft_seconds", "Time to first token of successful attempts",
            ["model", "provider"], buckets=TTFT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.requests = Counter(
            "ttft_router_requests", "Client requests by final HTTP status",
            ["model", "status"], registry=self.registry,
        )  # fmt: skip
        self.failovers = Counter(
            "ttft_router_failovers", "Requests that needed more than one attempt",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.dropped = Counter(
            "ttft_router_buffer_dropped", "Samples/decisions dropped because the buffer was full",
            ["kind"], registry=self.registry,
        )  # fmt: skip

        self.probes = Counter(
            "ttft_router_probes", "Probes sent, by outcome and by why they were sent",
            ["model", "provider", "outcome", "reason"], registry=self.registry,
        )  # fmt: skip

        self._sample_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._request_children: dict[tuple[str, int], Counter] = {}

    def record_sample(self, sample: Sample) -> None:
        key = (sample.model, sample.provider, sample.outcome.value)
        children = self._sample_children.get(key)
        if children is None:
            children = self._sample_children[key] = (
                self.attempts.labels(*key), self.ttft.labels(sample.model, sample.provider)
            )  # fmt: skip
        children[0].inc()
        if sample.ttft_s is not None:
            children[1].observe(sample.ttft_s)

    def count_request(self, model: str, status: int) -> None:
        """One client request that ended with HTTP `status` (499: the client went away)."""
        child = self._request_children.get((model, status))
        if child is None:
            child = self._request_children[model, status] = self.requests.labels(model, str(status))
        child.inc()

    def count_probe(self, pair: Pair, outcome: str, reason: str) -> None:
        self.probes.labels(pair.model, pair.provider, outcome, reason).inc()

    def watch(self, scoreboard: Scoreboard, buffer: SampleBuffer, store: Store) -> None:
        self.registry.register(_StateCollector(scoreboard, buffer, store))

    def watch_prober(self, prober: Prober) -> None:
        self.registry.register(_ProberCollector(prober))


class _ProberCollector(Collector):
    """The probe budget left in this replica's hour and whether the prober is paused."""

    def __init__(self, prober: Prober) -> None:
        self._prober = prober

    def collect(self) -> Iterator[Metric]:
        probes, cost = self._prober.budget_left(time.time())
        left = GaugeMetricFamily(
            "ttft_router_probe_budget_left",
            "Probe budget left in the current hour (probes; estimated USD)", labels=["kind"],
        )  # fmt: skip
        left.add_metric(["probes"], float(probes))
        left.add_metric(["cost_usd"], cost)
        yield left
        yield _gauge("ttft_router_prober_paused", "1 while the prober is paused at its budget",
                     float(self._prober.paused_because is not None))  # fmt: skip


class _StateCollector(Collector):
    """Scores, buffer and store health, read when Prometheus scrapes."""

    def __init__(self, scoreboard: Scoreboard, buffer: SampleBuffer, store: Store) -> None:
        self._scoreboard = scoreboard
        self._buffer = buffer
        self._store = store

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        stats: dict[str, Callable[..., float | None]] = {
            "median": lambda s: s.median, "p95": lambda s: s.p95, "p99": lambda s: s.p99,
            "tail_mean": lambda s: s.tail_mean,
            "cv": lambda s: s.cv, "error_rate": lambda s: s.error_rate,
            "cold_share": lambda s: s.cold_share, "n": lambda s: float(s.n),
        }  # fmt: skip
        score = GaugeMetricFamily(
            "ttft_router_score", "Current score of each pair (seconds, ratios, counts)",
            labels=["model", "provider", "stat"],
        )  # fmt: skip
        for pair, s in self._scoreboard.snapshot.items():
            for name, read in stats.items():
                value = read(s)
                if value is not None:
                    score.add_metric([pair.model, pair.provider, name], value)
        yield score
        yield _gauge("ttft_router_buffer_samples", "Samples waiting to be flushed",
                     len(self._buffer))  # fmt: skip
        health = self._store.health()
        yield _gauge("ttft_router_store_up", "1 when the store is reachable", float(health.ok))
        age = self._scoreboard.age_s(now)
        yield _gauge("ttft_router_scoreboard_age_seconds", "Seconds since the last refresh",
                     age if age is not None else float("nan"))  # fmt: skip


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family
