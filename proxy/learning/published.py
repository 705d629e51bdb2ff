"""The figures OpenRouter publishes per endpoint, per pair: TTFT and decode throughput at
p50/p75/p90/p99 and uptime, over the last 5 minutes, 30 minutes and day.

Computed when asked (the admin API, the report, the clients' endpoints route), never on the
request path, from the samples the scoreboard last read of each pair (the store's window:
at most its `max_samples`, so a busy pair's "day" may cover less than a day; `since`
says how far back it reaches). Every figure is `stats.compute_score`'s over the samples of
the span: Kaplan-Meier TTFT quantiles (a timeout counts as "slower than its timeout") and
`learning.decode`'s throughput percentiles (p90: the rate 90% of the answers reached).
Uptime is OpenRouter's: the percentage of attempts that ended without a provider error
(client cancels count as attempts without one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from proxy.core.domain import Pair, Sample, Score
from proxy.learning.decode import PERCENTILES
from proxy.learning.stats import compute_score
from proxy.settings.policy import WindowParams

SPANS = (("5m", 300.0), ("30m", 1800.0), ("1d", 86400.0))


@dataclass(frozen=True, slots=True)
class Span:
    """One pair's figures over one span (`name`: 5m, 30m, 1d). Latency in seconds, throughput
    in tokens/s, uptime in percent; None where the span holds nothing to compute it from."""

    name: str
    n_attempts: int
    since: float | None  # the oldest sample in the span (wall clock)
    uptime: float | None
    latency: dict[str, float] | None
    throughput: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_attempts": self.n_attempts, "since": self.since, "uptime": self.uptime,
            "latency": self.latency, "throughput": self.throughput,
        }  # fmt: skip


def span_of(name: str, score: Score, since: float | None) -> Span:
    """A span's figures from the score of its samples."""
    latency = None
    if score.n:
        values = (score.median, score.p75, score.p90, score.p99)
        latency = {p: v for p, v in zip(PERCENTILES, values, strict=True) if v is not None}
    t = score.throughput
    throughput = None if t is None else {p: t.percentile(p) for p in PERCENTILES}
    uptime = 100.0 * (1.0 - score.error_rate) if score.n_attempts else None
    return Span(name, score.n_attempts, since, uptime, latency, throughput)


def published(
    pair: Pair, samples: Sequence[Sample], params: WindowParams, now: float
) -> list[Span]:
    """The pair's spans (SPANS order) from its samples (any order, any age)."""
    out = []
    for name, seconds in SPANS:
        span = replace(params, max_samples=2**31 - 1, max_age_s=seconds)
        score = compute_score(pair, samples, span, now)
        oldest = min((s.timestamp for s in samples if s.timestamp >= now - seconds), default=None)
        out.append(span_of(name, score, oldest))
    return out


def openrouter_fields(spans: Sequence[Span]) -> dict[str, Any]:
    """The spans as OpenRouter names them: uptime_last_30m, latency_last_5m, ..."""
    fields: dict[str, Any] = {}
    for span in spans:
        fields[f"uptime_last_{span.name}"] = span.uptime
        fields[f"latency_last_{span.name}"] = span.latency
        fields[f"throughput_last_{span.name}"] = span.throughput
    return fields
