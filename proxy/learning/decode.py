"""Decode throughput: a window's samples -> the pair's `Throughput` (domain), and the figures
OpenRouter publishes per endpoint share its percentile convention.

A sample measures throughput when its answer came whole and had at least two output tokens
over a measurable time (`Sample.tokens_per_s`: tokens after the first per second after the
first token). Pure Python over a sorted list: this runs for every changed pair on every
scoreboard refresh, over at most a window's samples, and needs nothing of numpy.

Percentiles read as OpenRouter's: throughput's p90 is the rate at least 90% of the answers
reached (the slow tail), i.e. the 10% quantile of the rates; TTFT's p90 is its 90% quantile
as usual. Both sides are the "worse" side, so a cutoff reads the same way for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from proxy.core.domain import Sample, Throughput

PERCENTILES = ("p50", "p75", "p90", "p99")
LEVELS = {"p50": 0.50, "p75": 0.75, "p90": 0.90, "p99": 0.99}


def lower_quantile(ascending: Sequence[float], q: float) -> float:
    """The smallest value whose cumulative share reaches q (numpy's `inverted_cdf`) of a
    non-empty ascending sequence."""
    index = max(0, math.ceil(q * len(ascending) - 1e-9) - 1)
    return ascending[min(index, len(ascending) - 1)]


def slow_side(ascending_rates: Sequence[float], name: str) -> float:
    """Throughput percentile `name` (p50..p99) of non-empty ascending rates: the rate at
    least that share of the answers reached."""
    level = LEVELS[name]
    if level == 0.5:
        return lower_quantile(ascending_rates, 0.5)
    return lower_quantile(ascending_rates, 1.0 - level)


def throughput_of(samples: Sequence[Sample]) -> Throughput | None:
    """The decode throughput of `samples` (a window, any order); None when none measured it."""
    # `Sample.tokens_per_s` inlined: this loop is most of the cost on a scoreboard refresh
    measured = [
        (tokens, decode_s) for s in samples
        if (tokens := s.output_tokens) is not None and tokens > 1
        and (decode_s := s.decode_s) is not None and decode_s > 0.0
    ]  # fmt: skip
    if not measured:
        return None
    rates = sorted([(tokens - 1) / decode_s for tokens, decode_s in measured])
    lengths = sorted([float(tokens) for tokens, _ in measured])
    p50, p75, p90, p99 = (slow_side(rates, name) for name in PERCENTILES)
    return Throughput(len(rates), p50, p75, p90, p99, lower_quantile(lengths, 0.5))
