"""Pure statistics: the samples of one pair -> its Score. numpy lives here and nowhere else.

Quantiles are those of the Kaplan-Meier estimator, so that censored attempts (hedge losers,
timeouts, client cancels before the first token: "TTFT > t") are honest: their probability
mass moves to the slower observations, never to the faster ones, so a pair can never look
faster because its slow requests were cut off. With no censoring the estimator is the
empirical distribution and a quantile is numpy's `inverted_cdf` (the smallest observed value
whose cumulative share reaches q). When a quantile lies beyond every first token seen (the
tail is all censored), we report the largest time observed: a lower bound, never a guess.

`tail_mean` is the mean of the slowest 5% of the distribution (expected shortfall, CVaR95):
unlike p95 it grows with the size of rare cold starts, so a 2% share of 40 s cold starts
shows even in a window where p95 sits in the warm tail (docs/statistics.md).

Mean, std and CV count a censored attempt at its censoring time (a lower bound too).
CV is the standard std/mean (sample std, ddof=1); std/median and p95/p50 sit beside it as
robust measures of the same spread (see docs/statistics.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from proxy.domain import ERROR_OUTCOMES, SAMPLE_TIME, Outcome, Pair, Sample, Score, Source

QUANTILES = (0.5, 0.9, 0.95, 0.99)
TAIL_SHARE = 0.05


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
    recent.sort(key=SAMPLE_TIME)
    return recent


def km_masses(
    times: npt.NDArray[np.float64], observed: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Kaplan-Meier probability masses of right-censored data, sorted by time.

    `times[i]` is a TTFT when `observed[i]`, else a censoring time (TTFT > times[i]).
    Returns (sorted times, mass at each): censored entries carry no mass of their own, and
    the mass left beyond the last first token (an all-censored tail) is put on the largest
    time seen, a lower bound. Requires at least one element.
    """
    # Ties: an event at t happens before a censoring at t (the standard convention).
    order = np.lexsort((~observed, times))
    t, e = times[order], observed[order]
    at_risk = len(t) - np.arange(len(t))
    survival = np.cumprod(1.0 - e / at_risk)
    mass = np.concatenate(([1.0], survival[:-1])) - survival
    mass[-1] += survival[-1]
    return t, mass


def quantiles_of(
    t: npt.NDArray[np.float64], mass: npt.NDArray[np.float64], qs: Sequence[float]
) -> list[float]:
    """For each q, the smallest time whose cumulative mass reaches q (inverted CDF)."""
    cdf = np.cumsum(mass)
    idx = np.searchsorted(cdf, np.asarray(qs) - 1e-12, side="left")
    return [float(t[min(int(i), len(t) - 1)]) for i in idx]


def tail_mean_of(
    t: npt.NDArray[np.float64], mass: npt.NDArray[np.float64], share: float = TAIL_SHARE
) -> float:
    """Mean of the slowest `share` of the distribution (expected shortfall)."""
    slow_first, slow_mass = t[::-1], mass[::-1]
    above = np.cumsum(slow_mass) - slow_mass  # mass strictly slower than each time
    take = np.minimum(slow_mass, np.maximum(share - above, 0.0))
    return float(np.dot(take, slow_first) / take.sum())


def km_quantiles(
    times: npt.NDArray[np.float64], observed: npt.NDArray[np.bool_], qs: Sequence[float]
) -> list[float]:
    """Kaplan-Meier quantiles (see km_masses); max(times) where the estimate ends early."""
    return quantiles_of(*km_masses(times, observed), qs)


def empirical_quantiles(times: npt.NDArray[np.float64], qs: Sequence[float]) -> list[float]:
    """Quantiles of uncensored data; equal to `km_quantiles` with everything observed."""
    return [float(v) for v in np.quantile(times, qs, method="inverted_cdf")]


def compute_score(pair: Pair, samples: Sequence[Sample], params: WindowParams, now: float) -> Score:
    """Score of a pair from its samples (any order, any age: the window is applied here)."""
    recent = window(samples, params, now)
    times: list[float] = []
    observed: list[bool] = []
    n_errors = n_passive = n_probe = 0
    last_error = None
    for s in recent:  # one pass: this runs for every changed pair every refresh
        if s.outcome in ERROR_OUTCOMES:
            n_errors += 1
            last_error = s.timestamp
        if s.source is Source.PASSIVE:
            n_passive += 1
        elif s.source is Source.PROBE:
            n_probe += 1
        if s.ttft_s is not None:
            times.append(s.ttft_s)
            observed.append(True)
        elif s.censored_at_s is not None:
            times.append(s.censored_at_s)
            observed.append(False)
    figures = _latency_figures(times, observed, params) if times else _NO_FIGURES
    return Score(
        model=pair.model,
        provider=pair.provider,
        n=len(times),
        n_censored=len(observed) - sum(observed),
        n_errors=n_errors,
        n_attempts=len(recent),
        error_rate=n_errors / len(recent) if recent else 0.0,
        consecutive_errors=_trailing_errors(recent),
        newest_ts=recent[-1].timestamp if recent else None,
        last_error_ts=last_error,
        n_passive=n_passive,
        n_probe=n_probe,
        is_proven=len(times) >= params.min_samples,
        **figures,
    )


_NO_FIGURES: dict[str, float | None] = dict.fromkeys(
    ("median", "p90", "p95", "p99", "tail_mean", "mean", "std", "cv", "std_over_median",
     "tail_ratio", "cold_share"),
)  # fmt: skip


def _latency_figures(
    values: list[float], is_observed: list[bool], params: WindowParams
) -> dict[str, float | None]:
    times = np.array(values, dtype=np.float64)
    if all(is_observed):
        t = np.sort(times)
        mass = np.full(len(t), 1.0 / len(t))
    else:
        t, mass = km_masses(times, np.array(is_observed, dtype=np.bool_))
    median, p90, p95, p99 = quantiles_of(t, mass, QUANTILES)
    mean = float(times.mean())
    std = float(times.std(ddof=1)) if len(times) > 1 else 0.0
    cold_threshold = max(params.cold_factor * median, params.cold_floor_s)
    return {
        "median": median,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "tail_mean": tail_mean_of(t, mass),
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
        if sample.outcome not in ERROR_OUTCOMES:
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
