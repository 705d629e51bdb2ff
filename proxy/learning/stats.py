"""Pure statistics: the samples of one pair -> its Score, and of one model's pairs -> their
Scores with a posterior of the routing objective each (`score_model`). numpy lives here and
nowhere else.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from proxy.core.domain import (
    ERROR_OUTCOMES,
    SAMPLE_TIME,
    Belief,
    Change,
    Outcome,
    Pair,
    Prefill,
    Sample,
    Score,
    Source,
)
from proxy.learning import prefill
from proxy.learning.change import detect
from proxy.learning.decode import throughput_of
from proxy.settings.policy import WindowParams

QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)
RECENT = 10  # a score keeps its newest samples' timestamps (routing.advice counts them)
TAIL_SHARE = 0.05
# Policy objective -> the quantile it is (tail_mean is the expected shortfall instead).
OBJECTIVE_QUANTILE = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
PRIOR_POINTS = 40  # the pooled prior, as this many quantiles of the model's pairs' mixture
PRIOR_ATOMS = 2  # points of the prior that carry its weight in one posterior draw


def in_window(samples: Sequence[Sample], params: WindowParams, now: float) -> list[Sample]:
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


def compute_score(pair: Pair, samples: Sequence[Sample], params: WindowParams, now: float) -> Score:
    """Score of a pair from its samples (any order, any age: the window is applied here),
    without a Belief (that needs the model's other pairs: `score_model`)."""
    return _score_of_window(pair, in_window(samples, params, now), params)


def _score_of_window(pair: Pair, recent: list[Sample], params: WindowParams) -> Score:
    times: list[float] = []
    observed: list[bool] = []
    n_errors = n_passive = n_probe = n_steered = 0
    last_error = None
    for s in recent:  # one pass: this runs for every changed pair every refresh
        if s.outcome in ERROR_OUTCOMES:
            n_errors += 1
            last_error = s.timestamp
        if s.source is Source.PASSIVE:
            n_passive += 1
        elif s.source is Source.PROBE:
            n_probe += 1
        elif s.source is Source.STEERED:
            n_steered += 1
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
        recent_ts=tuple(s.timestamp for s in recent[-RECENT:]),
        last_error_ts=last_error,
        n_passive=n_passive,
        n_probe=n_probe,
        n_steered=n_steered,
        is_proven=len(times) >= params.min_samples,
        throughput=throughput_of(recent),
        **figures,  # type: ignore[arg-type]  # floats only; `belief` is not among them
    )


_NO_FIGURES: dict[str, float | None] = dict.fromkeys(
    ("median", "p75", "p90", "p95", "p99", "tail_mean", "mean", "std", "cv", "std_over_median",
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
    median, p75, p90, p95, p99 = quantiles_of(t, mass, QUANTILES)
    mean = float(times.mean())
    std = float(times.std(ddof=1)) if len(times) > 1 else 0.0
    cold_threshold = max(params.cold_factor * median, params.cold_floor_s)
    return {
        "median": median,
        "p75": p75,
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


# -- uncertainty: a posterior over each pair's routing objective -----------------------------


def score_model(
    windows: Mapping[Pair, Sequence[Sample]],
    params: WindowParams,
    now: float,
    seed: int,
    changes: Mapping[Pair, Change | None] | None = None,
) -> dict[Pair, Score]:
    """The scores of one model's pairs, each with its Belief (the posterior of the objective).

    Method (docs/policies.md): a weighted Bayesian bootstrap, i.e. draws from the posterior
    of a Dirichlet process whose base measure is pooled from the model's pairs:
    - each latency observation weighs 0.5 ** (age / half_life_s), so old evidence counts
      less and a pair not measured for long is uncertain again;
    - `prior_weight` pseudo-observations, drawn from PRIOR_POINTS quantiles of the
      equal-weight mixture of the model's measured pairs, join every pair's data: a pair
      with 15 lucky samples keeps a plausible tail of the model's typical cold starts until
      its own evidence outweighs them;
    - a draw gives every observation a mass weight x Exp(1) and the prior's atoms gamma
      masses (`_belief`), and takes the objective of the weighted Kaplan-Meier
      distribution, so a censored attempt moves its mass to slower observations only, in
      every draw.
    - a pair with no latency observation (and any pair the router meets with no score)
      is believed to be like a random one of the measured pairs (`_typical_pair`), the
      `prior` every Belief of the model carries.
    `params.draws` draws per pair, computed here (once per scoreboard refresh), never per
    request. `changes`: each pair's newest change as its online detector found it (the
    scoreboard's, learning.change); without them each window is tested on its own.
    """
    rng = np.random.default_rng(seed)
    scored: dict[Pair, tuple[Score, _Obs | None]] = {}
    for pair, samples in windows.items():
        recent = in_window(samples, params, now)
        score, obs = _score(pair, recent, params)
        if params.change is not None and obs is not None:
            change = changes.get(pair) if changes is not None else detect(recent, params.change)
            if change is not None and change.at_ts >= recent[0].timestamp:  # else it is history
                score = replace(score, change=change)
        scored[pair] = score, obs
    measured = {pair: obs for pair, (_, obs) in scored.items() if obs is not None}
    if not measured:
        return {pair: score for pair, (score, _) in scored.items()}
    weights = {pair: _weights(pair, obs, scored, params, now) for pair, obs in measured.items()}
    fits = _prefills(scored, measured, weights, params)
    present = sorted({int(c) for obs in measured.values() for c in np.unique(obs.classes)})
    by_class = {c: _class_beliefs(c, scored, measured, weights, fits, params, rng) for c in present}
    out: dict[Pair, Score] = {}
    base = present[0]
    for pair, (score, _) in scored.items():
        sized = tuple((c, by_class[c][pair]) for c in present[1:])
        out[pair] = replace(
            score, belief=by_class[base][pair], belief_class=base, sized=sized,
            prefill=fits.get(pair),
        )  # fmt: skip
    return out


def _class_beliefs(
    size: int,
    scored: Mapping[Pair, object],
    measured: Mapping[Pair, _Obs],
    weights: Mapping[Pair, npt.NDArray[np.float64]],
    fits: Mapping[Pair, Prefill],
    params: WindowParams,
    rng: np.random.Generator,
) -> dict[Pair, Belief]:
    """Every pair's belief for prompts of size class `size` (learning.prefill): its samples
    of that class and, weighing less, of the classes beside it, moved to the class's centre;
    a pair with none there (or none at all: `scored` holds every pair) gets the model's
    prior for the class."""
    near: dict[Pair, tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_],
                           npt.NDArray[np.float64]]] = {}  # fmt: skip
    for pair, obs in measured.items():
        times, factor = prefill.moved(obs.times, obs.tokens, obs.classes, fits[pair], size)
        keep = factor > 0.0
        if keep.any():
            near[pair] = times[keep], obs.observed[keep], weights[pair][keep] * factor[keep]
    pooled = _pooled_points([_Obs.of(times, seen) for times, seen, _ in near.values()])
    beliefs = {
        pair: _belief(times, seen, w, pooled, params, rng)
        for pair, (times, seen, w) in near.items()
    }
    prior = _typical_pair(list(beliefs.values()), params, rng)
    out = {pair: replace(belief, prior=prior) for pair, belief in beliefs.items()}
    for pair in scored:
        out.setdefault(pair, prior)
    return out


def _prefills(
    scored: Mapping[Pair, tuple[Score, _Obs | None]],
    measured: Mapping[Pair, _Obs],
    weights: Mapping[Pair, npt.NDArray[np.float64]],
    params: WindowParams,
) -> dict[Pair, Prefill]:
    """Each measured pair's prefill rate; the pairs whose samples do not fix one get the
    median of the model's identified rates, else the policy's prior."""
    fits = {}
    for pair, obs in measured.items():
        warm = obs.observed & (obs.times <= _cold_above(obs, params))
        fits[pair] = prefill.fit(obs.tokens, obs.times, warm, weights[pair],
                                 params.prefill_s_per_token)  # fmt: skip
    known = [f.s_per_token for f in fits.values() if f.identified]
    if known:
        pooled = float(np.median(known))
        fits = {p: f if f.identified else replace(f, s_per_token=pooled) for p, f in fits.items()}
    return fits


def _cold_above(obs: _Obs, params: WindowParams) -> npt.NDArray[np.float64]:
    """Each sample's cold-start-like threshold, by its own prompt size class: above
    `cold_factor` x the median of its class (and `cold_floor_s`). One threshold for all sizes
    would take a slow-prefill pair's long prompts for cold starts and hide its slope."""
    above = np.empty(len(obs.times), np.float64)
    for size in np.unique(obs.classes):
        mine = obs.classes == size
        median = (
            float(np.median(obs.times[mine & obs.observed])) if (mine & obs.observed).any() else 0.0
        )
        above[mine] = max(params.cold_factor * median, params.cold_floor_s)
    return above


def _weights(
    pair: Pair,
    obs: _Obs,
    scored: Mapping[Pair, tuple[Score, _Obs | None]],
    params: WindowParams,
    now: float,
) -> npt.NDArray[np.float64]:
    """Each observation's weight: halved every `half_life_s` of age, less after changes,
    `steered_weight` for a request the client's own controls placed (docs/security.md)."""
    aged = np.power(0.5, np.maximum(now - obs.stamps, 0.0) / params.half_life_s)
    if obs.steered is not None:
        aged = np.where(obs.steered, aged * params.steered_weight, aged)
    return _after_changes(aged, obs.stamps, pair, scored, params)


def _after_changes(
    weights: npt.NDArray[np.float64],
    stamps: npt.NDArray[np.float64],
    pair: Pair,
    scored: Mapping[Pair, tuple[Score, _Obs | None]],
    params: WindowParams,
) -> npt.NDArray[np.float64]:
    """The evidence weights after changes (learning.change): a pair's own samples from
    before its change count `pre_change_weight`; when another pair of the model changed
    later, the samples from before that change count `others_weight` too (the market
    moved: what the pair was then says less of what it is now)."""
    change = params.change
    if change is None:
        return weights
    own = scored[pair][0].change
    if own is not None:
        weights = np.where(stamps < own.at_ts, weights * change.pre_change_weight, weights)
    others = [s.change.at_ts for p, (s, _) in scored.items() if p != pair and s.change is not None]
    newest = max(others, default=None)
    if newest is not None and (own is None or newest > own.at_ts):
        weights = np.where(stamps < newest, weights * change.others_weight, weights)
    return weights


@dataclass(frozen=True, slots=True)
class _Obs:
    times: npt.NDArray[np.float64]
    observed: npt.NDArray[np.bool_]
    stamps: npt.NDArray[np.float64]
    t: npt.NDArray[np.float64]  # Kaplan-Meier support, sorted
    mass: npt.NDArray[np.float64]
    tokens: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    classes: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    steered: npt.NDArray[np.bool_] | None = None  # None: none is (Source.STEERED)

    @classmethod
    def of(cls, times: npt.NDArray[np.float64], observed: npt.NDArray[np.bool_]) -> _Obs:
        """Times alone (the pooled prior's points need only their Kaplan-Meier masses)."""
        t, mass = km_masses(times, observed)
        return cls(times, observed, np.zeros(0), t, mass)


def _score(pair: Pair, recent: list[Sample], params: WindowParams) -> tuple[Score, _Obs | None]:
    score = _score_of_window(pair, recent, params)
    if score.n == 0:
        return score, None
    latency = [s for s in recent if s.ttft_s is not None or s.censored_at_s is not None]
    times = np.array(
        [s.ttft_s if s.ttft_s is not None else s.censored_at_s for s in latency], np.float64
    )
    observed = np.array([s.ttft_s is not None for s in latency], np.bool_)
    stamps = np.array([s.timestamp for s in latency], np.float64)
    tokens = np.array([s.prompt_tokens for s in latency], np.float64)
    steered = None
    if score.n_steered:
        steered = np.array([s.source is Source.STEERED for s in latency], np.bool_)
    t, mass = km_masses(times, observed)
    return score, _Obs(
        times, observed, stamps, t, mass, tokens, prefill.classes_of(tokens), steered
    )


def _pooled_points(measured: list[_Obs]) -> npt.NDArray[np.float64]:
    """PRIOR_POINTS quantiles of the equal-weight mixture of the measured pairs."""
    t = np.concatenate([o.t for o in measured])
    mass = np.concatenate([o.mass / len(measured) for o in measured])
    order = np.argsort(t, kind="stable")
    levels = (np.arange(PRIOR_POINTS) + 0.5) / PRIOR_POINTS
    return np.array(quantiles_of(t[order], mass[order], list(levels)), np.float64)


def _belief(
    times: npt.NDArray[np.float64],
    observed: npt.NDArray[np.bool_],
    weights: npt.NDArray[np.float64],
    prior_t: npt.NDArray[np.float64],
    params: WindowParams,
    rng: np.random.Generator,
) -> Belief:
    """K draws of the objective from observations (`times`, `observed`, `weights`) and the
    pooled prior's points `prior_t`.

    An observation of weight w gets mass w x Exp(1) in a draw (the weighted Bayesian
    bootstrap). The prior's `prior_weight` goes, in each draw, to PRIOR_ATOMS of its points
    picked at random, each with mass Gamma(prior_weight / PRIOR_ATOMS): a Dirichlet
    process's small concentration puts its mass on few atoms, and drawing them so costs a
    few gammas per draw instead of one per point (a gamma of shape < 1 is ~10x an
    exponential)."""
    k, n, m = params.draws, len(times), len(prior_t)
    t = np.concatenate((times, prior_t))
    e = np.concatenate((observed, np.ones(m, np.bool_)))
    g = np.zeros((k, n + m))
    g[:, :n] = rng.standard_exponential((k, n)) * weights
    if m and params.prior_weight > 0:
        rows = np.repeat(np.arange(k), PRIOR_ATOMS)
        atoms = n + rng.integers(0, m, size=k * PRIOR_ATOMS)
        np.add.at(g, (rows, atoms), rng.gamma(params.prior_weight / PRIOR_ATOMS, size=len(rows)))
    order = np.lexsort((~e, t))  # events before censorings at ties, as km_masses
    t, e = t[order], e[order]
    g = np.maximum(g[:, order], 1e-300)  # keep every row's total positive
    if e.all():
        mass = g / g.sum(axis=1, keepdims=True)
    else:  # weighted Kaplan-Meier in every draw (redistribute censored mass to the right)
        at_risk = np.cumsum(g[:, ::-1], axis=1)[:, ::-1]
        survival = np.cumprod(1.0 - g * e / at_risk, axis=1)
        before = np.concatenate((np.ones((k, 1)), survival[:, :-1]), axis=1)
        mass = before - survival
        mass[:, -1] += survival[:, -1]
    # `expected`: a posterior of the median (its warm part); routing adds the chance of a
    # cold start right now (proxy.routing.ranking.expect).
    q = OBJECTIVE_QUANTILE.get(params.objective, 0.5 if params.objective == "expected" else None)
    if q is None:
        values = _tail_means(t, mass)
    else:
        cdf = np.cumsum(mass, axis=1)
        values = t[np.minimum(np.argmax(cdf >= q - 1e-12, axis=1), len(t) - 1)]
    return _summary(values, params, float(weights.sum()))


def _summary(values: npt.NDArray[np.float64], params: WindowParams, n_eff: float) -> Belief:
    k = len(values)
    ordered = np.sort(values)
    return Belief(
        objective=params.objective,
        estimate=float(ordered[k // 2]),
        low=float(ordered[int(0.05 * (k - 1))]),
        high=float(ordered[round(0.95 * (k - 1))]),
        lowest=float(ordered[0]),
        highest=float(ordered[-1]),
        draws=tuple(values.tolist()),
        n_eff=n_eff,
        prior_weight=params.prior_weight,
    )


def _typical_pair(beliefs: list[Belief], params: WindowParams, rng: np.random.Generator) -> Belief:
    """The belief about a pair of the model nobody has measured: it is like one of the
    measured pairs, any of them alike. Draw j is a random draw of a random measured pair,
    so the pair comes first in about the share a random existing pair would: explored, not
    starved, never preferred blindly."""
    draws = np.array([b.draws for b in beliefs], np.float64)
    k = params.draws
    values = draws[rng.integers(0, len(beliefs), size=k), rng.integers(0, draws.shape[1], size=k)]
    return _summary(values, params, 0.0)


def _tail_means(
    t: npt.NDArray[np.float64], mass: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """`tail_mean_of` for every row of `mass` (K draws over the same sorted support `t`)."""
    slow_mass = mass[:, ::-1]
    above = np.cumsum(slow_mass, axis=1) - slow_mass
    take = np.minimum(slow_mass, np.maximum(TAIL_SHARE - above, 0.0))
    result: npt.NDArray[np.float64] = (take @ t[::-1]) / take.sum(axis=1)
    return result
