"""The report of a bench run at several prompt sizes (`ttft-router bench --prompt-tokens`,
the prompts themselves: method/prompts.py): the TTFT per pair and size, and the slope of
TTFT in prompt tokens.

The slope per pair is the least-squares line through its median TTFT at each size (medians:
a cold start at one size does not tilt it), in seconds per 1,000 prompt tokens, with the
line's TTFT at zero tokens beside it. Does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.core.domain import Sample, Score
from proxy.learning.stats import compute_score
from proxy.method.plan import Judgement, PairSpec


@dataclass(frozen=True, slots=True)
class SizeRow:
    """One pair at one prompt size: the score of its counted samples of that size."""

    spec: PairSpec
    prompt_tokens: int
    score: Score

    def to_dict(self) -> dict[str, object]:
        s, t = self.score, self.score.throughput
        return {
            "model": self.spec.model, "provider": self.spec.provider,
            "prompt_tokens": self.prompt_tokens, "n": s.n, "errors": s.n_errors,
            "median_s": s.median, "p95_s": s.p95, "tokens_per_s_p50": t.p50 if t else None,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Slope:
    """A pair's TTFT line in prompt tokens: seconds per 1,000 tokens, and at zero tokens."""

    spec: PairSpec
    s_per_1k: float
    at_zero_s: float
    sizes: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.spec.model, "provider": self.spec.provider,
            "s_per_1k_prompt_tokens": self.s_per_1k, "ttft_at_zero_s": self.at_zero_s,
            "prompt_tokens": list(self.sizes),
        }  # fmt: skip


def size_rows(
    samples: dict[PairSpec, list[Sample]], sizes: Sequence[int], judgement: Judgement, now: float
) -> list[SizeRow]:
    """Every pair at every size, from its counted samples (each carries its nominal size)."""
    rows = []
    for spec, pair_samples in samples.items():
        params = judgement.window_params(spec.model)
        for size in sizes:
            of_size = [s for s in pair_samples if s.prompt_tokens == size]
            rows.append(SizeRow(spec, size, compute_score(spec.pair, of_size, params, now)))
    return rows


def slopes(rows: Sequence[SizeRow]) -> list[Slope]:
    """Per pair with a median at two sizes or more: the least-squares line through them."""
    by_pair: dict[PairSpec, list[tuple[int, float]]] = {}
    for row in rows:
        if row.score.median is not None:
            by_pair.setdefault(row.spec, []).append((row.prompt_tokens, row.score.median))
    out = []
    for spec, points in by_pair.items():
        if len(points) < 2:
            continue
        slope, intercept = least_squares(points)
        out.append(Slope(spec, 1000.0 * slope, intercept, tuple(x for x, _ in points)))
    return out


def least_squares(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the line closest to `points` (at least two distinct x)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var
    return slope, mean_y - slope * mean_x
