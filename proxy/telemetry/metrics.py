"""Prometheus collectors, declared once per app on the app's own registry.

Per-request work is a few calls (an attempt counter, a TTFT histogram, a decision counter) on
label children cached here by their label values: prometheus_client's `labels()` validates
and locks on every call (~5 us per sample, measured by benchmarks/micro.py); a dict lookup
does not. The caches hold exactly the children the registry holds. Everything derived from
the scoreboard, buffer, store and prober is read at scrape time by collectors that live
with the health endpoints (`proxy.api.health`), so it costs the request path nothing and
this module depends on `domain` only: every layer can count things.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.core.domain import Decision, HedgeRecord, Sample

if TYPE_CHECKING:
    from proxy.core.domain import Pair

MAX_CLIENT_LABELS = 1000  # distinct `client` label values; later names count as "other"
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
        self.hedges = Counter(
            "ttft_router_hedges", "Hedge decisions: fired, won (the hedge served) or skipped",
            ["model", "result"], registry=self.registry,
        )  # fmt: skip
        self.cold_hedges = Counter(
            "ttft_router_cold_hedges", "Hedges fired at once: the chosen pair was probably cold",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.hedge_saved = Counter(
            "ttft_router_hedge_saved_seconds", "TTFT winning hedges saved (an estimate)",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.dropped = Counter(
            "ttft_router_buffer_dropped", "Samples/decisions dropped because the buffer was full",
            ["item"], registry=self.registry,
        )  # fmt: skip

        self.probes = Counter(
            "ttft_router_probes", "Probes sent, by outcome and by why they were sent",
            ["model", "provider", "outcome", "reason"], registry=self.registry,
        )  # fmt: skip
        self.decisions = Counter(
            "ttft_router_decisions", "Routing decisions by model, chosen provider and verdict",
            ["model", "provider", "verdict"], registry=self.registry,
        )  # fmt: skip
        self.cost = Counter(
            "ttft_router_cost_usd", "USD of answered requests: reported usage x the pair's price",
            ["model", "provider"], registry=self.registry,
        )  # fmt: skip
        self.controls = Counter(
            "ttft_router_routes_shaped", "Requests whose route controls or policy steering shaped",
            ["model"], registry=self.registry,
        )  # fmt: skip

        self.request_faults = Counter(
            "ttft_router_request_faults",
            "Failed attempts the request caused, not held against the pair, by kind: rejected "
            "(the provider refused it as malformed), too_large (a 429 for its size alone), "
            "long_prompt (a first-token timeout of a long prompt)",
            ["model", "provider", "kind"], registry=self.registry,
        )  # fmt: skip
        # By client (proxy.clients): names come from the config, at most MAX_CLIENT_LABELS.
        self.client_requests = Counter(
            "ttft_router_client_requests", "Requests admitted, by client",
            ["client"], registry=self.registry,
        )  # fmt: skip
        self.client_refusals = Counter(
            "ttft_router_client_refusals", "Requests refused by a client's limits, budget or "
            "permissions, by reason", ["client", "reason"], registry=self.registry,
        )  # fmt: skip
        self.client_tokens = Counter(
            "ttft_router_client_tokens", "Tokens charged to a client (reported usage, else the "
            "estimate)", ["client"], registry=self.registry,
        )  # fmt: skip
        self.client_cost = Counter(
            "ttft_router_client_cost_usd", "USD charged to a client: its answers' cost and the "
            "estimated cost of their hedges and failover attempts", ["client"],
            registry=self.registry,
        )  # fmt: skip
        self.client_limits_local = Gauge(
            "ttft_router_client_limits_local", "1 while client limits are counted by this "
            "replica alone (the store did not answer)", registry=self.registry,
        )  # fmt: skip
        self._client_children: dict[str, tuple[Counter, Counter, Counter]] = {}
        self._client_labels: dict[str, str] = {}

        self._sample_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._decision_children: dict[tuple[str, str, str], Counter] = {}
        # OTLP export (proxy.telemetry.otel), set only when the config enables it.
        self.export: ExportSink | None = None

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
            if self.export is not None:
                self.export.ttft(sample)

    def count_decision(self, decision: Decision) -> None:
        """One finished request's decision: sets `decision.verdict` and counts it by model,
        the provider that served it (else the first choice, else "none") and that verdict."""
        verdict = decision.verdict = verdict_of(decision)
        provider = decision.winner or decision.choice or "none"
        key = (decision.model, provider, verdict)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)
        child.inc()
        if self.export is not None:
            self.export.decision(*key)

    def count_cost(self, decision: Decision) -> None:
        """A finished request's cost (when it is known) and whether its route was shaped."""
        if decision.cost_usd is not None and decision.winner is not None:
            self.cost.labels(decision.model, decision.winner).inc(decision.cost_usd)
        if decision.controls:
            self.controls.labels(decision.model).inc()

    def count_hedge(self, model: str, hedge: HedgeRecord) -> None:
        """One request's hedge: fired (and won, when the hedge served it) or skipped."""
        if hedge.fired:
            self.hedges.labels(model, "fired").inc()
            if hedge.trigger == "cold":
                self.cold_hedges.labels(model).inc()
            if hedge.winner is not None and hedge.winner != hedge.primary:
                self.hedges.labels(model, "won").inc()
                if hedge.saved_s:
                    self.hedge_saved.labels(model).inc(hedge.saved_s)
        elif hedge.skipped is not None:
            self.hedges.labels(model, "skipped").inc()

    def watch_hedge_budgets(self, left: Callable[[float], dict[str, float]]) -> None:
        """Expose the hedges each model may still fire in its current window."""
        self.registry.register(_HedgeBudgetCollector(left))

    def count_request(self, model: str, status: int) -> None:
        """One client request that ended with HTTP `status` (499: the client went away)."""
        child = self._request_children.get((model, status))
        if child is None:
            child = self._request_children[model, status] = self.requests.labels(model, str(status))
        child.inc()

    def _client(self, name: str) -> tuple[Counter, Counter, Counter]:
        """The client's counters (requests, tokens, cost): its own label, or "other" past
        MAX_CLIENT_LABELS names."""
        children = self._client_children.get(name)
        if children is None:
            label = self.client_label(name)
            children = (self.client_requests.labels(label), self.client_tokens.labels(label),
                        self.client_cost.labels(label))  # fmt: skip
            self._client_children[name] = children
        return children

    def client_label(self, name: str) -> str:
        label = self._client_labels.get(name)
        if label is None:
            label = name if len(self._client_labels) < MAX_CLIENT_LABELS else "other"
            self._client_labels[name] = label
        return label

    def count_client_request(self, client: str) -> None:
        self._client(client)[0].inc()

    def count_client_use(self, client: str, tokens: int, cost_usd: float) -> None:
        _, tokens_child, cost_child = self._client(client)
        tokens_child.inc(tokens)
        if cost_usd:
            cost_child.inc(cost_usd)

    def count_client_refusal(self, client: str, reason: str) -> None:
        self.client_refusals.labels(self.client_label(client), reason).inc()

    def count_probe(self, pair: Pair, outcome: str, reason: str) -> None:
        self.probes.labels(pair.model, pair.provider, outcome, reason).inc()

    def watch(self, collector: Collector) -> None:
        """Read `collector` at every scrape (the state gauges of `proxy.api.health`)."""
        self.registry.register(collector)


class ExportSink(Protocol):
    """Where the request path's figures also go (proxy.telemetry.otel's OTLP exporter)."""

    def ttft(self, sample: Sample) -> None: ...

    def decision(self, model: str, provider: str, verdict: str) -> None: ...

    def shutdown(self) -> None: ...


# The label values of ttft_router_decisions_total{verdict} (Ranking.verdict, plus dispatch's own).
VERDICTS = ("best", "holding", "exploring", "failover", "hedged", "measuring",
                  "weighted", "trial", "unavailable")  # fmt: skip


def verdict_of(decision: Decision) -> str:
    """best | holding | exploring | failover | hedged | measuring | weighted | trial |
    unavailable.

    hedged: a hedge fired beside the first choice (the hedge counters say who won);
    failover: more than one attempt was made otherwise; unavailable: nothing could be tried.
    Otherwise the routing's own verdict (`Ranking.verdict`, set on the decision when it is
    made), so the reason text is never rendered for a counter.
    """
    if not decision.ranked:
        return "unavailable"
    if decision.hedge is not None and decision.hedge.fired:
        return "hedged"
    if len(decision.attempts) > 1:
        return "failover"
    return decision.verdict or "best"


class _HedgeBudgetCollector(Collector):
    def __init__(self, left: Callable[[float], dict[str, float]]) -> None:
        self._left = left

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ttft_router_hedge_budget_left", "Hedges a model may still fire in its window",
            labels=["model"],
        )  # fmt: skip
        for model, left in self._left(time.monotonic()).items():
            family.add_metric([model], left)
        yield family


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family
