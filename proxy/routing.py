"""Pure routing: (policy, scores, candidates, incumbent, rng, now) -> ranked candidates + reason.

`rank()` does no I/O and reads no clock of its own, so every decision can be replayed and
explained (/admin/explain calls the same function). `Router` adds the only state routing
needs: the incumbent per model (for hysteresis), the rate-limit deadlines announced by
providers' Retry-After headers and the circuit breakers (proxy.circuit); it remembers a
model's last ranking while nothing it was made from can have changed (see `Router.route`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from proxy.circuit import Breakers, CircuitState, trial_order
from proxy.domain import Candidate, LazyText, Pair, Score, empty_score
from proxy.policy import ModelPolicy

OBJECTIVES = {
    "p50": "median",
    "p90": "p90",
    "p95": "p95",
    "p99": "p99",
    "tail_mean": "tail_mean",
}


EXCLUDED_BY_POLICY = "excluded by policy"


@dataclass(frozen=True, slots=True)
class Ranking:
    ranked: list[Candidate]
    excluded: list[Candidate]
    explanation: LazyText  # the reason, rendered when first read
    is_exploration: bool = False

    @property
    def reason(self) -> str:
        return str(self.explanation)


def rank(
    policy: ModelPolicy,
    deployments: Sequence[tuple[str, str]],
    scores: Mapping[Pair, Score],
    model: str,
    *,
    incumbent: str | None,
    rate_limited_until: Mapping[Pair, float],
    rng: random.Random,
    now: float,
    circuits: Mapping[Pair, CircuitState] | None = None,
) -> Ranking:
    """Order a model's deployments ((provider, upstream model id) pairs) for one request.
    `circuits`: the open or failing circuits (proxy.circuit), none when not given."""
    circuits = circuits or {}
    eligible: list[Candidate] = []
    excluded: list[Candidate] = []
    for provider, upstream_model in deployments:
        pair = Pair(model, provider)
        score = scores.get(pair) or empty_score(pair)
        why = _exclusion(policy, provider, rate_limited_until.get(pair), circuits.get(pair), now)
        (excluded if why else eligible).append(Candidate(provider, upstream_model, score, why))
    if not eligible:
        return _all_excluded(excluded, model, circuits, now)
    key = OBJECTIVES[policy.objective]
    proven = sorted((c for c in eligible if c.score.is_proven), key=lambda c: getattr(c.score, key))
    unproven = [c for c in eligible if not c.score.is_proven]
    rng.shuffle(unproven)
    unproven.sort(key=lambda c: c.score.n)  # stable: least measured first, ties at random
    if not proven:
        first = unproven[0]
        return Ranking(
            unproven,
            excluded,
            LazyText(
                lambda: (
                    f"no pair proven yet (each needs {policy.min_samples} samples): "
                    f"measuring {first.provider} first (n={first.score.n})"
                )
            ),
        )
    if unproven and rng.random() < policy.exploration_share:
        pick = unproven[0]
        best = proven[0]
        return Ranking(
            [pick, *proven, *unproven[1:]],
            excluded,
            LazyText(
                lambda: (
                    f"exploring: {pick.provider} is unproven (n={pick.score.n} of "
                    f"{policy.min_samples}); {_figures(best, key)} is the best proven"
                )
            ),
            is_exploration=True,
        )
    if policy.mode == "weighted":
        order = _weighted_order(proven, key, rng)
        return Ranking(
            order + unproven, excluded, LazyText(lambda: _weighted_reason(order[0], proven, key))
        )
    order, reason = _hold_or_switch(proven, key, policy.hysteresis, incumbent)
    return Ranking(order + unproven, excluded, reason)


def _exclusion(
    policy: ModelPolicy,
    provider: str,
    limited_until: float | None,
    circuit: CircuitState | None,
    now: float,
) -> str | None:
    if provider in policy.exclude:
        return EXCLUDED_BY_POLICY
    if limited_until is not None and limited_until > now:
        return f"rate-limited (429) for another {limited_until - now:.1f} s"
    return circuit.exclusion(now) if circuit is not None else None


def _all_excluded(
    excluded: list[Candidate], model: str, circuits: Mapping[Pair, CircuitState], now: float
) -> Ranking:
    """Nothing eligible. If open circuits are why, the soonest-due of those pairs go as
    trials (one request at a time): recovery after a total outage costs one good attempt,
    not a cooldown. A pair out by policy or by a rate limit is never a trial."""
    out_by_circuit = {
        Pair(model, c.provider): c
        for c in excluded
        if (state := circuits.get(Pair(model, c.provider))) is not None
        and c.excluded_because == state.exclusion(now)
    }
    trials = [
        replace(out_by_circuit[pair], excluded_because=None)
        for pair in trial_order(circuits, out_by_circuit, now)
    ]
    if not trials:
        return Ranking(
            [], excluded, LazyText(lambda: "no provider available: " + _list_exclusions(excluded))
        )
    names = {c.provider for c in trials}
    return Ranking(
        trials,
        [c for c in excluded if c.provider not in names],
        LazyText(
            lambda: (
                f"every provider is out ({_list_exclusions(excluded)}): "
                f"trial request to {', '.join(c.provider for c in trials)}"
            )
        ),
    )


def _hold_or_switch(
    proven: list[Candidate], key: str, hysteresis: float, incumbent: str | None
) -> tuple[list[Candidate], LazyText]:
    best = proven[0]
    holder = next((c for c in proven if c.provider == incumbent), None) if incumbent else None
    if holder is not None and holder is not best:
        holder_value = getattr(holder.score, key)
        if getattr(best.score, key) > holder_value * (1.0 - hysteresis):
            order = [holder, *(c for c in proven if c is not holder)]
            return order, LazyText(
                lambda: (
                    f"holding {_figures(holder, key)}: challenger {_figures(best, key)} "
                    f"is not better by {hysteresis:.0%}"
                )
            )
    return proven, LazyText(lambda: _best_reason(proven, key))


def _best_reason(proven: list[Candidate], key: str) -> str:
    best = proven[0]
    others = "; ".join(_figures(c, key) for c in proven[1:4]) or "no other proven pair"
    return (
        f"{best.provider} has the lowest {LABELS.get(key, key)} among {len(proven)} proven pairs: "
        f"{_figures(best, key)}; others: {others}"
    )


def _weighted_order(proven: list[Candidate], key: str, rng: random.Random) -> list[Candidate]:
    """Draw an order without replacement, each pair weighted by 1 / objective.

    One pass (Efraimidis-Spirakis): sorting by u ** (1 / weight), u uniform in (0, 1], gives
    the same distribution of orders as drawing one pair at a time in proportion to its
    weight among those left, in O(n log n) instead of O(n^2) draws.
    """
    keyed = [
        ((1.0 - rng.random()) ** max(getattr(c.score, key), 1e-6), i, c)
        for i, c in enumerate(proven)
    ]  # u ** (1 / w) with w = 1 / objective
    keyed.sort(reverse=True)
    return [c for _, _, c in keyed]


def _weighted_reason(chosen: Candidate, proven: list[Candidate], key: str) -> str:
    total = sum(1.0 / max(getattr(c.score, key), 1e-6) for c in proven)
    share = (1.0 / max(getattr(chosen.score, key), 1e-6)) / total
    return f"weighted draw: {_figures(chosen, key)} had a {share:.0%} share"


LABELS = {"median": "median", "tail_mean": "tail mean (slowest 5%)"}


def _figures(c: Candidate, key: str) -> str:
    s = c.score
    cv = f"{s.cv:.0%}" if s.cv is not None else "n/a"
    lead = "" if key in ("p95", "median") else f"{LABELS.get(key, key)} {getattr(s, key):.3f} s, "
    return (
        f"{c.provider} ({lead}p95 {s.p95:.3f} s, median {s.median:.3f} s, CV {cv}, "
        f"errors {s.error_rate:.0%}, n={s.n})"
    )


def _list_exclusions(excluded: list[Candidate]) -> str:
    return "; ".join(f"{c.provider}: {c.excluded_because}" for c in excluded) or "none configured"


class Router:
    """Holds the incumbent per model and providers' rate-limit deadlines between requests."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.incumbents: dict[str, str] = {}
        self.rate_limited_until: dict[Pair, float] = {}
        self.breakers = Breakers()
        self._rate_limits_version = 0
        self._steady: dict[str, _Steady] = {}

    def route(
        self,
        policy: ModelPolicy,
        deployments: Sequence[tuple[str, str]],
        scores: Mapping[Pair, Score],
        model: str,
        now: float,
        *,
        dry_run: bool = False,
    ) -> Ranking:
        """`rank()` with this router's incumbent and rate limits.

        A steady ranking (see `_is_steady`) is kept and returned again, as it is, while the
        scores snapshot, the policy, the deployments and the incumbent are the very same
        objects and no rate limit or circuit changed: then `rank()` would return an equal
        ranking, so a request pays a few identity checks instead of a ranking and its reason
        text. The returned lists are shared between requests and must not be mutated.
        """
        steady = self._steady.get(model)
        if (
            steady is not None
            and steady.scores is scores
            and steady.policy is policy
            and steady.deployments is deployments
            and steady.rate_limits_version == self._rate_limits_version
            and steady.circuits_version == self.breakers.version
            and steady.incumbent == self.incumbents.get(model)
        ):
            return steady.ranking
        ranking = rank(
            policy,
            deployments,
            scores,
            model,
            incumbent=self.incumbents.get(model),
            rate_limited_until=self.rate_limited_until,
            rng=self.rng,
            now=now,
            circuits=self.breakers.states,
        )
        if not dry_run and ranking.ranked and not ranking.is_exploration:
            first = ranking.ranked[0]
            if first.score.is_proven:
                self.incumbents[model] = first.provider
        if not dry_run and _is_steady(ranking, policy):
            self._steady[model] = _Steady(
                scores, policy, deployments, self._rate_limits_version,
                self.breakers.version, self.incumbents.get(model), ranking,
            )  # fmt: skip
        else:
            self._steady.pop(model, None)
        return ranking

    def note_rate_limited(self, pair: Pair, until: float) -> None:
        self.rate_limited_until[pair] = max(until, self.rate_limited_until.get(pair, 0.0))
        self._rate_limits_version += 1


@dataclass(frozen=True, slots=True)
class _Steady:
    scores: Mapping[Pair, Score]
    policy: ModelPolicy
    deployments: Sequence[tuple[str, str]]
    rate_limits_version: int
    circuits_version: int
    incumbent: str | None
    ranking: Ranking


def _is_steady(ranking: Ranking, policy: ModelPolicy) -> bool:
    """True when `rank()` on the same inputs gives this ranking again at any later time.

    Best mode only (weighted draws anew each time); every eligible pair proven (else an
    exploration draw and a shuffle of the unproven); nothing excluded but by policy (a rate
    limit or an open circuit ends with time). An eligible pair stays eligible as time passes
    until a rate limit or a circuit changes, which moves a version the cache compares.
    """
    return (
        policy.mode == "best"
        and bool(ranking.ranked)
        and all(c.score.is_proven for c in ranking.ranked)
        and all(c.excluded_because == EXCLUDED_BY_POLICY for c in ranking.excluded)
    )
