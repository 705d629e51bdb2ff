"""Pure statistics: the samples of one pair -> its Score. numpy lives here and nowhere else.

Quantiles are those of the Kaplan-Meier estimator, so that censored attempts (hedge losers,
timeouts, client cancels before the first token: "TTFT > t") are honest: their probability
mass moves to the slower observations, never to the faster ones, so a pair can never look
faster because its slow requests were cut off. With no censoring the estimator is the
empirical distribution and a quantile is numpy's `inverted_cdf` (the smallest observed value
whose cumulative share reaches q). When a quantile lies beyond every first token seen (the
tail is all censored), we report the largest time observed: a lower bound, never a guess.

Mean, std and CV count a censored attempt at its censoring time (a lower bound too).
CV is the standard std/mean (sample std, ddof=1); std/median and p95/p50 sit beside it as
robust measures of the same spread (see docs/statistics.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from proxy.domain import Outcome, Pair, Sample, Score, Source

QUANTILES = (0.5, 0.9, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class WindowParams:
    """What a policy says about one model's window and statistics."""

    max_samples: int = 200
    max_age_s: float = 3600.0
    min_samples: int = 20
    cold_factor: float = 4.0
    cold_floor_s: float = 2.0


def window(samples: Sequence[Sample], params: WindowParams, now: float) -> list[Sample]:
    """The newest `max_samples` samples no older than `max_age_s`, oldest first."""
    oldest = now - params.max_age_s
    recent = [s for s in samples[-params.max_samples :] if s.timestamp >= oldest]
    recent.sort(key=lambda s: s.timestamp)
    return recent


def km_quantiles(
    times: npt.NDArray[np.float64], observed: npt.NDArray[np.bool_], qs: Sequence[float]
) -> list[float]:
    """Kaplan-Meier quantiles of right-censored data.

    `times[i]` is a TTFT when `observed[i]`, else a censoring time (TTFT > times[i]).
    Returns, for each q, the smallest time t with F(t) >= q, or max(times) when the
    estimate never reaches q. Requires at least one element.
    """
    # Ties: an event at t happens before a censoring at t (the standard convention).
    order = np.lexsort((~observed, times))
    t, e = times[order], observed[order]
    at_risk = len(t) - np.arange(len(t))
    cdf = 1.0 - np.cumprod(1.0 - e / at_risk)
    out = []
    for q in qs:
        idx = int(np.searchsorted(cdf, q - 1e-12, side="left"))
        out.append(float(t[idx]) if idx < len(t) else float(t[-1]))
    return out


def empirical_quantiles(times: npt.NDArray[np.float64], qs: Sequence[float]) -> list[float]:
    """Quantiles of uncensored data; equal to `km_quantiles` with everything observed."""
    return [float(v) for v in np.quantile(times, qs, method="inverted_cdf")]


def compute_score(pair: Pair, samples: Sequence[Sample], params: WindowParams, now: float) -> Score:
    """Score of a pair from its samples (any order, any age: the window is applied here)."""
    recent = window(samples, params, now)
    latency = [s for s in recent if s.ttft_s is not None or s.censored_at_s is not None]
    n_errors = sum(1 for s in recent if s.outcome.is_error)
    newest = recent[-1].timestamp if recent else None
    last_error = max((s.timestamp for s in recent if s.outcome.is_error), default=None)
    figures = _latency_figures(latency, params) if latency else None
    return Score(
        model=pair.model,
        provider=pair.provider,
        n=len(latency),
        n_censored=sum(1 for s in latency if s.ttft_s is None),
        n_errors=n_errors,
        n_attempts=len(recent),
        error_rate=n_errors / len(recent) if recent else 0.0,
        consecutive_errors=_trailing_errors(recent),
        newest_ts=newest,
        last_error_ts=last_error,
        n_passive=sum(1 for s in recent if s.source is Source.PASSIVE),
        n_probe=sum(1 for s in recent if s.source is Source.PROBE),
        is_proven=len(latency) >= params.min_samples,
        **(figures or _NO_FIGURES),
    )


_NO_FIGURES: dict[str, float | None] = dict.fromkeys(
    ("median", "p90", "p95", "p99", "mean", "std", "cv", "std_over_median", "tail_ratio",
     "cold_share"),
)  # fmt: skip


def _latency_figures(latency: list[Sample], params: WindowParams) -> dict[str, float | None]:
    times = np.fromiter(
        (s.ttft_s if s.ttft_s is not None else s.censored_at_s for s in latency),
        dtype=np.float64,
        count=len(latency),
    )
    observed = np.fromiter((s.ttft_s is not None for s in latency), dtype=np.bool_)
    if observed.all():
        median, p90, p95, p99 = empirical_quantiles(times, QUANTILES)
    else:
        median, p90, p95, p99 = km_quantiles(times, observed, QUANTILES)
    mean = float(times.mean())
    std = float(times.std(ddof=1)) if len(times) > 1 else 0.0
    cold_threshold = max(params.cold_factor * median, params.cold_floor_s)
    return {
        "median": median,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "mean": mean,
        "std": std,
        "cv": std / mean if mean > 0 else None,
        "std_over_median": std / median if median > 0 else None,
        "tail_ratio": p95 / median if median > 0 else None,
        "cold_share": float(np.count_nonzero(times > cold_threshold)) / len(times),
    }


def _trailing_errors(recent: list[Sample]) -> int:
    count = 0
    for sample in reversed(recent):
        if sample.outcome is Outcome.CANCELLED:
            continue
        if not sample.outcome.is_error:
            break
        count += 1
    return count


def cv_band(cv: float | None, tight_below: float, variable_below: float) -> str:
    """The policy's verdict band for a CV (std/mean): tight, variable, cold-start-prone."""
    if cv is None:
        return "unknown"
    if cv < tight_below:
        return "tight"
    if cv < variable_below:
        return "variable"
    return "cold-start-prone"
