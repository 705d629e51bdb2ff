"""Pure ranking: one model's view -> the order of its pairs for one request, with the reason.

Ranking under uncertainty (docs/policies.md): every measured pair's Score carries a Belief,
K posterior draws of the routing objective made at scoreboard refresh (learning.stats).
A request picks one draw index and orders the pairs by their draws (Thompson sampling):
a pair gets the first place in proportion to the chance that it is the best, so traffic
explores only pairs whose plausible range overlaps the leader's, and stops once they are
clearly worse. A pair nobody has measured is believed to be like a random measured one.
Attempts pending for a pair narrow its draw toward its estimate (so a burst inside one
refresh does not all explore the same pair). `min_samples` only names a pair "proven".

Everything a ranking is made from is one value, `ModelView`; `rank()` (= `prepare()` then
`order()`) does no I/O, reads no clock and keeps no state, so every decision can be replayed
and explained. The state between requests (incumbents, rate limits, circuits, pending
attempts) is the routing component's (routing.component), which builds the view.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from math import sqrt
from types import MappingProxyType
from typing import Any

from proxy.core.domain import (
    Belief,
    Candidate,
    ColdModel,
    LazyText,
    Pair,
    Score,
    empty_score,
    render_candidates,
)
from proxy.learning.prefill import size_class
from proxy.routing import reasons
from proxy.routing.circuit import CircuitState, trial_order
from proxy.routing.reasons import WinShares
from proxy.settings.policy import ModelPolicy

# Policy objective -> the Score attribute that is its point estimate.
OBJECTIVES = {
    "p50": "median",
    "p90": "p90",
    "p95": "p95",
    "p99": "p99",
    "tail_mean": "tail_mean",
    "expected": "median",  # its warm part: `expect` adds the chance of a cold start now
}

EXCLUDED_BY_POLICY = "excluded by policy"
NOTHING: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ModelView:
    """Everything one ranking of one model is made from, at one moment.

    `pairs`: provider -> that provider's model id, in config order. `served_by`: the
    providers that serve the request's endpoint (None: all of them); the others are
    excluded with `unserved_reason`. `circuits`: the open or failing circuits;
    `rate_limited_until`: Retry-After deadlines (wall clock), both per pair. Pairs are
    compared by their beliefs for the request's prompt size (learning.prefill)."""

    policy: ModelPolicy
    model: str
    pairs: Mapping[str, str]
    scores: Mapping[Pair, Score]
    now: float
    incumbent: str | None = None
    rate_limited_until: Mapping[Pair, float] = dataclass_field(default_factory=dict)
    circuits: Mapping[Pair, CircuitState] = dataclass_field(default_factory=dict)
    served_by: frozenset[str] | None = None
    unserved_reason: str = ""
    prompt_tokens: int = 0  # the request's (estimated): its size class picks the beliefs

    @property
    def size_class(self) -> int:
        return size_class(self.prompt_tokens)

    def score(self, provider: str) -> Score:
        pair = Pair(self.model, provider)
        return self.scores.get(pair) or empty_score(pair)


@dataclass(frozen=True, slots=True)
class Ranking:
    """One request's order. Immutable (tuples): the routing component returns a steady
    ranking to many requests, and their decisions share it, its candidates rendered once
    (`candidates`)."""

    ranked: tuple[Candidate, ...]
    excluded: tuple[Candidate, ...]
    reason: LazyText  # rendered when first read (str())
    is_exploration: bool = False
    leader: str | None = None  # the measured pair with the best estimate (hysteresis applied)
    # best | holding | exploring | measuring | weighted | trial | unavailable: what the reason
    # says, as a word the counters use without rendering the reason
    verdict: str = "best"
    _rendered: list[Any] = dataclass_field(default_factory=list, compare=False, repr=False)

    def candidates(self, now: float) -> list[dict[str, Any]]:
        """The ranked then the excluded candidates as plain data, scores as of `now`:
        rendered once per `now` (the decisions of one buffer flush share one `now`), so
        the requests a steady ranking routed render its scores once per flush."""
        memo = self._rendered
        if not memo or memo[0] != now:
            memo[:] = [now, render_candidates(self.ranked, self.excluded, now)]
        rows: list[dict[str, Any]] = memo[1]
        return rows


@dataclass(slots=True)
class Standing:  # not frozen: built for many requests, cheaper to construct
    """What a ranking is made from, before the request's own draw: the eligible candidates,
    their beliefs and the leader. Depends on the clock only through exclusions (see
    `lasts`), so the routing component keeps one per model while its inputs stay the same."""

    view: ModelView
    eligible: list[Candidate]
    excluded: tuple[Candidate, ...]  # shared by the rankings made from this standing
    prior: Belief | None = None
    beliefs: list[Belief] = dataclass_field(default_factory=list)
    advantage: list[float] = dataclass_field(default_factory=list)  # incumbent: 1 - hysteresis
    exploit: list[float] = dataclass_field(default_factory=list)  # the order without a draw
    leader: int = 0
    unscaled: int = 0  # the best estimate without the hysteresis
    holding: bool = False  # the leader leads only by the hysteresis (the incumbent is held)
    timed: bool = False  # the beliefs hold a chance of being cold at `now` (`expect`)

    @property
    def lasts(self) -> bool:
        """True when this standing holds at any later time for the same inputs: nothing is
        excluded but by policy or endpoint (a rate limit or an open circuit ends with time),
        and an eligible pair stays eligible until a rate limit or a circuit changes."""
        if self.timed:
            return False
        lasting = (EXCLUDED_BY_POLICY, self.view.unserved_reason)
        return all(c.excluded_because in lasting for c in self.excluded)


def rank(
    view: ModelView,
    rng: random.Random,
    pending: Mapping[Pair, int] = NOTHING,
    *,
    probed: bool = False,
    draw: bool = True,
    shares: WinShares | None = None,
) -> Ranking:
    """Order a model's pairs for one request.

    `pending`: attempts per pair whose result the scores do not hold yet (in flight, or
    ended since the snapshot): they narrow that pair's posterior draw, as the evidence they
    will bring will. `probed`: the prober measures this model, so user requests explore
    with `probed_exploration_share` instead of `exploration_share`. `draw`: False ranks by
    the estimates alone (explain: the deterministic choice). `shares`: the win-share cache
    the reason text reads (the routing component owns one; a fresh one otherwise).
    """
    return order(prepare(view), rng, pending, probed=probed, draw=draw, shares=shares)


def prepare(view: ModelView) -> Standing:
    """The filters and the beliefs of `rank()`, with no draw."""
    eligible: list[Candidate] = []
    excluded: list[Candidate] = []
    prior: Belief | None = None
    size = view.size_class
    for provider, upstream_model in view.pairs.items():
        score = view.score(provider)
        belief = score.belief_for(size)
        if prior is None and belief is not None:
            prior = belief.prior
        why = _exclusion(view, provider)
        (excluded if why else eligible).append(Candidate(provider, upstream_model, score, why))
    standing = Standing(view, eligible, tuple(excluded))
    if prior is None or not eligible:
        return standing
    policy = view.policy
    beliefs = [c.score.belief_for(size) or prior for c in eligible]
    if policy.objective == "expected":
        now = view.now
        beliefs = [expect(b, c.score.cold, now) for b, c in zip(beliefs, eligible, strict=True)]
        standing.timed = any(c.score.cold is not None for c in eligible)
    cut = 1.0 - policy.hysteresis
    advantage = [cut if c.provider == view.incumbent else 1.0 for c in eligible]
    exploit = [exploit_key(b, f) for b, f in zip(beliefs, advantage, strict=True)]
    leader = min(range(len(eligible)), key=exploit.__getitem__)
    unscaled = min(range(len(eligible)), key=lambda i: exploit_key(beliefs[i], 1.0))
    standing.prior, standing.beliefs, standing.advantage = prior, beliefs, advantage
    standing.exploit, standing.leader, standing.unscaled = exploit, leader, unscaled
    standing.holding = unscaled != leader
    return standing


def expect(belief: Belief, cold: ColdModel | None, now: float) -> Belief:
    """The `expected` objective: P(cold at `now`) x cold-start TTFT + (1 - P) x the belief's
    median, draw by draw (the belief is the posterior of the median: learning.stats)."""
    if cold is None or cold.cold_ttft_s is None:
        return belief
    p = cold.chance(now)
    if p <= 0.0:
        return belief
    part = p * cold.cold_ttft_s

    def mix(x: float) -> float:
        return part + (1.0 - p) * x

    return replace(
        belief, estimate=mix(belief.estimate), low=mix(belief.low), high=mix(belief.high),
        lowest=mix(belief.lowest), highest=mix(belief.highest),
        draws=tuple(part + (1.0 - p) * d for d in belief.draws),
    )  # fmt: skip


def order(
    standing: Standing,
    rng: random.Random,
    pending: Mapping[Pair, int] = NOTHING,
    *,
    probed: bool = False,
    draw: bool = True,
    shares: WinShares | None = None,
) -> Ranking:
    """The request's own part of `rank()`: its posterior draw, or the warm-up order."""
    eligible, excluded, view = standing.eligible, standing.excluded, standing.view
    if not eligible:
        return _all_excluded(excluded, view)
    prior = standing.prior
    if prior is None:
        return _warm_up(eligible, excluded, view.model, pending, rng)
    policy, beliefs, leader = view.policy, standing.beliefs, standing.leader
    if policy.mode == "weighted":
        weighted = tuple(_weighted_order(eligible, beliefs, rng))
        return Ranking(
            weighted,
            excluded,
            LazyText(lambda: reasons.weighted(weighted[0], eligible, beliefs)),
            verdict="weighted",
        )
    share = policy.probed_exploration_share if probed else policy.exploration_share
    if draw and (share >= 1.0 or (share > 0.0 and rng.random() < share)):
        values = _drawn(standing, rng.randrange(len(prior.draws)), pending)
    else:
        values = standing.exploit
    ordered = tuple(eligible[i] for i in sorted(range(len(eligible)), key=values.__getitem__))
    first = ordered[0]
    exploring = first is not eligible[leader]
    cache = shares if shares is not None else WinShares()
    return Ranking(
        ordered,
        excluded,
        LazyText(lambda: reasons.ranked(standing, first, exploring, cache)),
        is_exploration=exploring,
        leader=eligible[leader].provider if beliefs[leader].n_eff > 0.0 else None,
        verdict="exploring" if exploring else ("holding" if standing.holding else "best"),
    )


def _drawn(standing: Standing, j: int, pending: Mapping[Pair, int]) -> list[float]:
    """Every eligible pair's draw j (the incumbent's scaled by the hysteresis)."""
    beliefs, advantage = standing.beliefs, standing.advantage
    if not pending:
        return [b.draws[j % len(b.draws)] * f for b, f in zip(beliefs, advantage, strict=True)]
    model = standing.view.model
    return [
        _pending_draw(b, j, pending.get(Pair(model, c.provider), 0)) * f
        for c, b, f in zip(standing.eligible, beliefs, advantage, strict=True)
    ]


_UNMEASURED = 1e18  # added to the estimate of a pair known only through the prior


def exploit_key(b: Belief, advantage: float) -> float:
    """The order without a draw: by estimate (the incumbent's scaled by the hysteresis),
    measured pairs before pairs known only through the model's prior."""
    return b.estimate * advantage if b.n_eff > 0.0 else _UNMEASURED + b.estimate


def _pending_draw(b: Belief, j: int, waiting: int) -> float:
    """Draw j, moved toward the estimate as if `waiting` more observations had arrived:
    the spread of a posterior narrows as sqrt(weight before / weight after)."""
    value = b.draws[j % len(b.draws)]
    if not waiting:
        return value
    weight = b.n_eff + b.prior_weight
    return b.estimate + (value - b.estimate) * sqrt(weight / (weight + waiting))


def _warm_up(
    eligible: list[Candidate],
    excluded: tuple[Candidate, ...],
    model: str,
    pending: Mapping[Pair, int],
    rng: random.Random,
) -> Ranking:
    """Nothing of the model measured yet: least measured first, counting the attempts in
    flight, ties at random, so a burst spreads evenly before the first score exists."""
    ordered = list(eligible)
    rng.shuffle(ordered)
    ordered.sort(key=lambda c: c.score.n + pending.get(Pair(model, c.provider), 0))
    first = ordered[0]
    waiting = pending.get(Pair(model, first.provider), 0)
    return Ranking(
        tuple(ordered),
        excluded,
        LazyText(lambda: reasons.warm_up(first, waiting)),
        is_exploration=True,
        verdict="measuring",
    )


def _exclusion(view: ModelView, provider: str) -> str | None:
    if not view.policy.is_usable(provider):
        return EXCLUDED_BY_POLICY
    if view.served_by is not None and provider not in view.served_by:
        return view.unserved_reason
    pair = Pair(view.model, provider)
    limited_until = view.rate_limited_until.get(pair)
    now = view.now
    if limited_until is not None and limited_until > now:
        return f"rate-limited (429) for another {limited_until - now:.1f} s"
    circuit = view.circuits.get(pair)
    return circuit.exclusion(now) if circuit is not None else None


def _all_excluded(excluded: tuple[Candidate, ...], view: ModelView) -> Ranking:
    """Nothing eligible. If open circuits are why, the soonest-due of those pairs go as
    trials (one request at a time): recovery after a total outage costs one good attempt,
    not a cooldown. A pair out by policy, endpoint or rate limit is never a trial."""
    model, circuits, now = view.model, view.circuits, view.now
    out_by_circuit = {
        Pair(model, c.provider): c
        for c in excluded
        if (state := circuits.get(Pair(model, c.provider))) is not None
        and c.excluded_because == state.exclusion(now)
    }
    trials = tuple(
        replace(out_by_circuit[pair], excluded_because=None)
        for pair in trial_order(circuits, out_by_circuit, now, view.policy.circuit.trial_interval_s)
    )
    if not trials:
        return Ranking(
            (),
            excluded,
            LazyText(lambda: "no provider available: " + reasons.exclusions(excluded)),
            verdict="unavailable",
        )
    names = {c.provider for c in trials}
    return Ranking(
        trials,
        tuple(c for c in excluded if c.provider not in names),
        LazyText(lambda: reasons.trial(excluded, trials)),
        verdict="trial",
    )


def _weighted_order(
    eligible: list[Candidate], beliefs: list[Belief], rng: random.Random
) -> list[Candidate]:
    """Draw an order without replacement, each pair weighted by 1 / estimate.

    One pass (Efraimidis-Spirakis): sorting by u ** (1 / weight), u uniform in (0, 1], gives
    the same distribution of orders as drawing one pair at a time in proportion to its
    weight among those left, in O(n log n) instead of O(n^2) draws.
    """
    keyed = [
        ((1.0 - rng.random()) ** max(b.estimate, 1e-6), i, c)
        for i, (c, b) in enumerate(zip(eligible, beliefs, strict=True))
    ]  # u ** (1 / w) with w = 1 / estimate
    keyed.sort(reverse=True)
    return [c for _, _, c in keyed]


def is_steady(ranking: Ranking, policy: ModelPolicy, incumbent: str | None, size: int = 0) -> bool:
    """True when `rank()` on the same inputs gives this ranking again at any later time.

    Best mode only (weighted draws anew each time); every eligible pair measured, and the
    ranges of their draws (scaled as ranked, the incumbent's by the hysteresis) disjoint in
    the ranked order: then every draw and any pending count give this same order. (The
    caller checks that its `Standing` lasts.)
    """
    if policy.mode != "best" or not ranking.ranked:
        return False
    cut = 1.0 - policy.hysteresis
    below = float("-inf")
    for c in ranking.ranked:
        b = c.score.belief_for(size)
        if b is None or b.n_eff <= 0.0:
            return False
        f = cut if c.provider == incumbent else 1.0
        if b.lowest * f <= below:
            return False
        below = b.highest * f
    return True
