"""Pure routing: (policy, scores, candidates, incumbent, rng, now) -> ranked candidates + reason.

Ranking under uncertainty (docs/policies.md): every measured pair's Score carries a Belief,
K posterior draws of the routing objective made at scoreboard refresh (stats.score_model).
A request picks one draw index and orders the pairs by their draws (Thompson sampling):
a pair gets the first place in proportion to the chance that it is the best, so traffic
explores only pairs whose plausible range overlaps the leader's, and stops once they are
clearly worse. A pair nobody has measured is believed to be like a random measured one.
Attempts pending for a pair narrow its draw toward its estimate (so a burst inside one
refresh does not all explore the same pair). `min_samples` only names a pair "proven".

`rank()` (= `prepare()` then `order()`) does no I/O and reads no clock of its own, so every
decision can be replayed and explained (/admin/explain ranks the same way, without a draw).
`Router` adds the only state routing needs: the incumbent per model (for hysteresis), the
rate-limit deadlines announced by providers' Retry-After headers, the circuit breakers
(proxy.routing.circuit) with the attempts pending per pair, and the models the prober measures. It
keeps a model's filtered candidates (`Field`) while nothing they were made from can have
changed (see `Router.route`). `evidence_wanted()` names the pairs a probe should measure.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from math import sqrt
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
from proxy.learning.coldness import describe
from proxy.routing.circuit import Breakers, CircuitState, trial_order
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


@dataclass(frozen=True, slots=True)
class Ranking:
    """One request's order. Immutable (tuples): the router returns a steady ranking to many
    requests, and their decisions share it, its candidates rendered once (`candidates`)."""

    ranked: tuple[Candidate, ...]
    excluded: tuple[Candidate, ...]
    reason: LazyText  # rendered when first read (str())
    is_exploration: bool = False
    leader: str | None = None  # the measured pair with the best estimate (hysteresis applied)
    # best | holding | exploring | measuring | weighted | trial | unavailable: what the reason
    # says, as a word the counters use without rendering the reason
    kind: str = "best"
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
    pending: Mapping[Pair, int] | None = None,
    probed: bool = False,
    draw: bool = True,
) -> Ranking:
    """Order a model's deployments ((provider, upstream model id) pairs) for one request.

    `circuits`: the open or failing circuits (proxy.routing.circuit), none when not given.
    `pending`: attempts per pair whose result the scores do not hold yet (in flight, or
    ended since the snapshot): they narrow that pair's posterior draw, as the evidence
    they will bring will. `probed`: the prober measures this model, so user requests
    explore with `probed_exploration_share` instead of `exploration_share`. `draw`: False
    ranks by the estimates alone (explain: the deterministic choice, no draw).
    """
    field = prepare(
        policy, deployments, scores, model, incumbent=incumbent,
        rate_limited_until=rate_limited_until, now=now, circuits=circuits,
    )  # fmt: skip
    return order(field, rng, pending or {}, probed=probed, draw=draw)


@dataclass(slots=True)
class Field:  # not frozen: built for many requests, cheaper to construct
    """What a ranking is made from, before the request's own draw: the candidates, their
    beliefs and the leader. Depends on the clock only through exclusions (see
    `Field.lasts`), so the router keeps one per model while its inputs stay the same."""

    policy: ModelPolicy
    model: str
    incumbent: str | None
    eligible: list[Candidate]
    excluded: tuple[Candidate, ...]  # shared by the rankings made from this field
    circuits: Mapping[Pair, CircuitState]
    now: float
    prior: Belief | None
    beliefs: list[Belief]
    advantage: list[float]  # the incumbent's (1 - hysteresis), else 1
    exploit: list[float]  # the order without a draw (`_exploit_key`)
    leader: int
    held: bool = False  # the leader leads only by the hysteresis (the incumbent is held)
    timed: bool = False  # the beliefs hold a chance of being cold at `now` (`expect`)

    @property
    def lasts(self) -> bool:
        """True when this field holds at any later time for the same inputs: nothing is
        excluded but by policy (a rate limit or an open circuit ends with time), and an
        eligible pair stays eligible until a rate limit or a circuit changes."""
        if self.timed:
            return False
        return all(c.excluded_because == EXCLUDED_BY_POLICY for c in self.excluded)


def prepare(
    policy: ModelPolicy,
    deployments: Sequence[tuple[str, str]],
    scores: Mapping[Pair, Score],
    model: str,
    *,
    incumbent: str | None,
    rate_limited_until: Mapping[Pair, float],
    now: float,
    circuits: Mapping[Pair, CircuitState] | None = None,
) -> Field:
    """The filters and the beliefs of `rank()`, with no draw."""
    circuits = circuits or {}
    eligible: list[Candidate] = []
    excluded: list[Candidate] = []
    prior: Belief | None = None
    for provider, upstream_model in deployments:
        pair = Pair(model, provider)
        score = scores.get(pair) or empty_score(pair)
        if prior is None and score.belief is not None:
            prior = score.belief.prior
        why = _exclusion(policy, provider, rate_limited_until.get(pair), circuits.get(pair), now)
        (excluded if why else eligible).append(Candidate(provider, upstream_model, score, why))
    if prior is None or not eligible:
        return Field(
            policy, model, incumbent, eligible, tuple(excluded), circuits, now, None, [], [],
            [], 0,
        )  # fmt: skip
    cut = 1.0 - policy.hysteresis
    beliefs = [c.score.belief or prior for c in eligible]
    timed = False
    if policy.objective == "expected":
        beliefs = [expect(b, c.score.cold, now) for b, c in zip(beliefs, eligible, strict=True)]
        timed = any(c.score.cold is not None for c in eligible)
    advantage = [cut if c.provider == incumbent else 1.0 for c in eligible]
    exploit = [_exploit_key(b, f) for b, f in zip(beliefs, advantage, strict=True)]
    leader = min(range(len(eligible)), key=exploit.__getitem__)
    unscaled = min(range(len(eligible)), key=lambda i: _exploit_key(beliefs[i], 1.0))
    return Field(
        policy, model, incumbent, eligible, tuple(excluded), circuits, now, prior, beliefs,
        advantage, exploit, leader, held=unscaled != leader, timed=timed,
    )  # fmt: skip


def expect(belief: Belief, cold: ColdModel | None, now: float) -> Belief:
    """The `expected` objective: P(cold at `now`) x cold-start TTFT + (1 - P) x the belief's
    median, draw by draw (the belief is the posterior of the median: stats)."""
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
    field: Field,
    rng: random.Random,
    pending: Mapping[Pair, int],
    *,
    probed: bool = False,
    draw: bool = True,
) -> Ranking:
    """The request's own part of `rank()`: its posterior draw, or the warm-up order."""
    eligible, excluded, policy, model = field.eligible, field.excluded, field.policy, field.model
    if not eligible:
        return _all_excluded(excluded, model, field.circuits, field.now)
    prior = field.prior
    if prior is None:
        return _warm_up(eligible, excluded, model, pending, rng)
    beliefs, advantage, leader = field.beliefs, field.advantage, field.leader
    if policy.mode == "weighted":
        weighted = tuple(_weighted_order(eligible, beliefs, rng))
        return Ranking(
            weighted,
            excluded,
            LazyText(lambda: _weighted_reason(weighted[0], eligible, beliefs)),
            kind="weighted",
        )
    share = policy.probed_exploration_share if probed else policy.exploration_share
    if draw and (share >= 1.0 or (share > 0.0 and rng.random() < share)):
        j = rng.randrange(len(prior.draws))
        if pending:
            values = [
                _pending_draw(b, j, pending.get(Pair(model, c.provider), 0)) * f
                for c, b, f in zip(eligible, beliefs, advantage, strict=True)
            ]
        else:
            values = [
                b.draws[j % len(b.draws)] * f for b, f in zip(beliefs, advantage, strict=True)
            ]
    else:
        values = field.exploit
    ordered = tuple(eligible[i] for i in sorted(range(len(eligible)), key=values.__getitem__))
    first = ordered[0]
    exploring = first is not eligible[leader]
    incumbent, now = field.incumbent, field.now
    return Ranking(
        ordered,
        excluded,
        LazyText(
            lambda: _reason(
                first, eligible, beliefs, advantage, leader, incumbent, policy, exploring, now
            )
        ),
        is_exploration=exploring,
        leader=eligible[leader].provider if beliefs[leader].n_eff > 0.0 else None,
        kind="exploring" if exploring else ("holding" if field.held else "best"),
    )


_UNMEASURED = 1e18  # added to the estimate of a pair known only through the prior


def _exploit_key(b: Belief, advantage: float) -> float:
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
    order = list(eligible)
    rng.shuffle(order)
    order.sort(key=lambda c: c.score.n + pending.get(Pair(model, c.provider), 0))
    first = order[0]
    waiting = pending.get(Pair(model, first.provider), 0)
    return Ranking(
        tuple(order),
        excluded,
        LazyText(
            lambda: (
                f"no pair of the model measured yet: measuring {first.provider} first "
                f"(n={first.score.n}, {waiting} attempts pending)"
            )
        ),
        is_exploration=True,
        kind="measuring",
    )


def _exclusion(
    policy: ModelPolicy,
    provider: str,
    limited_until: float | None,
    circuit: CircuitState | None,
    now: float,
) -> str | None:
    if provider in policy.exclude or (policy.allow is not None and provider not in policy.allow):
        return EXCLUDED_BY_POLICY
    if limited_until is not None and limited_until > now:
        return f"rate-limited (429) for another {limited_until - now:.1f} s"
    return circuit.exclusion(now) if circuit is not None else None


def _all_excluded(
    excluded: tuple[Candidate, ...],
    model: str,
    circuits: Mapping[Pair, CircuitState],
    now: float,
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
    trials = tuple(
        replace(out_by_circuit[pair], excluded_because=None)
        for pair in trial_order(circuits, out_by_circuit, now)
    )
    if not trials:
        return Ranking(
            (),
            excluded,
            LazyText(lambda: "no provider available: " + _list_exclusions(excluded)),
            kind="unavailable",
        )
    names = {c.provider for c in trials}
    return Ranking(
        trials,
        tuple(c for c in excluded if c.provider not in names),
        LazyText(
            lambda: (
                f"every provider is out ({_list_exclusions(excluded)}): "
                f"trial request to {', '.join(c.provider for c in trials)}"
            )
        ),
        kind="trial",
    )


def win_shares(beliefs: Sequence[Belief], advantage: Sequence[float]) -> list[float]:
    """Share of the posterior draws in which each pair is the best (Thompson's chance of
    choosing it, before pending evidence). Remembered for the same beliefs: the requests
    routed on one snapshot share them, and every logged decision renders its reason."""
    key = (tuple(map(id, beliefs)), tuple(advantage))
    known = _SHARES.get(key)
    if known is not None:
        return known[1]
    k = min(len(b.draws) for b in beliefs)
    scaled = [[d * f for d in b.draws[:k]] for b, f in zip(beliefs, advantage, strict=True)]
    wins = [0] * len(beliefs)
    for row in zip(*scaled, strict=True):
        wins[row.index(min(row))] += 1
    shares = [w / k for w in wins]
    if len(_SHARES) >= 256:
        _SHARES.clear()
    _SHARES[key] = (tuple(beliefs), shares)  # holds the beliefs: their ids stay theirs
    return shares


_SHARES: dict[
    tuple[tuple[int, ...], tuple[float, ...]], tuple[tuple[Belief, ...], list[float]]
] = {}


def _reason(
    first: Candidate,
    eligible: list[Candidate],
    beliefs: list[Belief],
    advantage: list[float],
    leader: int,
    incumbent: str | None,
    policy: ModelPolicy,
    exploring: bool,
    now: float = 0.0,
) -> str:
    shares = win_shares(beliefs, advantage)
    label = LABELS.get(policy.objective, policy.objective)
    rows = sorted(range(len(eligible)), key=lambda i: -shares[i])
    figures = "; ".join(
        _figures(eligible[i], beliefs[i], shares[i], policy.min_samples) for i in rows[:4]
    )
    if policy.objective == "expected":
        colds = [describe(c.provider, c.score.cold, now) for c in eligible if c.score.cold]
        if colds:
            figures += " (" + "; ".join(colds) + ")"
    lead = eligible[leader]
    unscaled = min(range(len(eligible)), key=lambda i: _exploit_key(beliefs[i], 1.0))
    if exploring:
        i = eligible.index(first)
        head = (
            f"exploring {first.provider}: best in {shares[i]:.0%} of posterior draws, its "
            f"plausible {label} overlaps the leader {lead.provider}'s"
        )
    elif unscaled != leader:
        head = (
            f"holding {lead.provider}, the incumbent: {eligible[unscaled].provider}'s "
            f"estimated {label} is not {policy.hysteresis:.0%} lower"
        )
    else:
        head = f"{lead.provider} has the lowest estimated {label}"
    return f"{head}: {figures}"


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


def _weighted_reason(chosen: Candidate, eligible: list[Candidate], beliefs: list[Belief]) -> str:
    total = sum(1.0 / max(b.estimate, 1e-6) for b in beliefs)
    b = beliefs[eligible.index(chosen)]
    share = (1.0 / max(b.estimate, 1e-6)) / total
    return f"weighted draw: {chosen.provider} had a {share:.0%} share ({_range(b)})"


LABELS = {
    "tail_mean": "tail mean (slowest 5%)",
    "p50": "median",
    "expected": "expected TTFT (cold chance now)",
}


def _range(b: Belief) -> str:
    label = LABELS.get(b.objective, b.objective)
    return f"{label} {b.estimate:.3f} s, 90% range {b.low:.3f}-{b.high:.3f} s"


def _figures(c: Candidate, b: Belief, share: float, min_samples: int) -> str:
    s = c.score
    if s.n == 0:
        return (
            f"{c.provider}: not measured, the model's prior: {_range(b)}, best in {share:.0%} "
            "of draws"
        )
    proven = "proven" if s.is_proven else f"unproven, below {min_samples}"
    cv = f"{s.cv:.0%}" if s.cv is not None else "n/a"
    return (
        f"{c.provider}: {_range(b)}, n={s.n} ({proven}; {s.n_censored} censored, weight "
        f"{b.n_eff:.1f} after ageing), p95 {s.p95:.3f} s, median {s.median:.3f} s, CV {cv}, "
        f"errors {s.error_rate:.0%}, best in {share:.0%} of draws"
    )


def _list_exclusions(excluded: Sequence[Candidate]) -> str:
    return "; ".join(f"{c.provider}: {c.excluded_because}" for c in excluded) or "none configured"


class Router:
    """Holds the incumbent per model and providers' rate-limit deadlines between requests,
    the circuit breakers (with the attempts pending per pair) and which models the prober
    measures (`probing`: a prober runs here; a model is probed unless its policy turns
    `probe.enabled` off)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.incumbents: dict[str, str] = {}
        self.rate_limited_until: dict[Pair, float] = {}
        self.breakers = Breakers()
        self.probing = False  # set by the app when its prober runs (config prober.enabled)
        self._rate_limits_version = 0
        self._steady: dict[str, _Steady] = {}
        self._scores_seen: Mapping[Pair, Score] | None = None

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
        """`rank()` with this router's incumbent, rate limits, circuits and pending attempts.
        A dry run (explain) ranks by the estimates alone and changes nothing.

        While the scores snapshot, the policy, the deployments and the incumbent are the
        very same objects and no rate limit or circuit changed, the model's `Field` (the
        filtered candidates and their beliefs) is kept, so a request pays its draw and a
        sort; a steady ranking (see `_is_steady`: every draw gives it) is returned again as
        it is. The returned lists are shared between requests and must not be mutated.
        """
        if scores is not self._scores_seen:  # a new snapshot holds what has ended so far
            self._scores_seen = scores
            self.breakers.settle()
        steady = self._steady.get(model)
        incumbent = self.incumbents.get(model)
        if (
            steady is not None
            and steady.scores is scores
            and steady.policy is policy
            and steady.deployments is deployments
            and steady.rate_limits_version == self._rate_limits_version
            and steady.circuits_version == self.breakers.version
            and steady.incumbent == incumbent
        ):
            if steady.ranking is not None:
                return steady.ranking
            field = steady.field
        else:
            field = prepare(
                policy, deployments, scores, model, incumbent=incumbent,
                rate_limited_until=self.rate_limited_until, now=now,
                circuits=self.breakers.states,
            )  # fmt: skip
        ranking = order(
            field, self.rng, self.breakers.pending, probed=self.probes(policy),
            draw=not dry_run,
        )  # fmt: skip
        if dry_run:
            return ranking
        if ranking.leader is not None:
            self.incumbents[model] = ranking.leader
        if ranking.leader == incumbent and field.lasts:
            self._steady[model] = _Steady(
                scores, policy, deployments, self._rate_limits_version,
                self.breakers.version, incumbent, field,
                ranking if _is_steady(ranking, policy, incumbent) else None,
            )  # fmt: skip
        else:
            self._steady.pop(model, None)
        return ranking

    def probes(self, policy: ModelPolicy) -> bool:
        """Whether the prober measures a model of this policy (then user requests explore
        with `probed_exploration_share`)."""
        return self.probing and policy.probe.enabled

    def note_rate_limited(self, pair: Pair, until: float) -> None:
        self.rate_limited_until[pair] = max(until, self.rate_limited_until.get(pair, 0.0))
        self._rate_limits_version += 1

    def evidence_wanted(
        self,
        policy: ModelPolicy,
        deployments: Sequence[tuple[str, str]],
        scores: Mapping[Pair, Score],
        model: str,
        now: float | None = None,
    ) -> list[Wanted]:
        """`evidence_wanted` with this router's incumbent."""
        incumbent = self.incumbents.get(model)
        return evidence_wanted(policy, deployments, scores, model, incumbent, now)


# Chances of being best (shares of posterior draws): under CLEARLY_WORSE a measured pair is
# out of contention (its burst of probes ends); a thin one is wanted again from CONTENDER on.
# The gap between them keeps a pair whose share hovers near one (64 draws) from flapping.
CLEARLY_WORSE = 0.05
CONTENDER = 0.10


@dataclass(frozen=True, slots=True)
class Wanted:
    """A pair the router would like measured (by a probe rather than a user's request)."""

    provider: str
    reason: str
    chance: float  # share of posterior draws in which the pair is the best


def evidence_wanted(
    policy: ModelPolicy,
    deployments: Sequence[tuple[str, str]],
    scores: Mapping[Pair, Score],
    model: str,
    incumbent: str | None = None,
    now: float | None = None,
) -> list[Wanted]:
    """The model's pairs whose measurement could change the routing, most wanted first:
    never measured; aged (its samples weigh less than half their count after ageing, and
    its newest is older than a half-life; `now`: the current time); or
    with fewer samples than `min_samples` yet best in at least CONTENDER (10%) of the
    posterior draws although not the leader; or whose tail is censored (hedge losers) and
    few probes saw past it. A pair with that much fresh evidence is left to the prober's
    own schedule, and so is a model with a single provider (there is nothing to decide)."""
    contest = _contest(policy, deployments, scores, model, incumbent)
    if contest is None:
        return []
    pairs, filled, shares, lead = contest
    if not filled:  # nothing measured: every pair is wanted alike
        return [Wanted(p, "not measured yet", 1.0 / len(pairs)) for p in pairs]
    out: list[tuple[int, float, Wanted]] = []
    for i, (p, b) in enumerate(zip(pairs, filled, strict=True)):
        score = scores.get(Pair(model, p))
        n = score.n if score is not None else 0
        if n == 0:
            # a pair with min_samples attempts and no latency is failing: its errors are
            # evidence enough, and the gap schedule and circuit breaker look after it
            if score is None or score.n_attempts < policy.min_samples:
                out.append((0, -shares[i], Wanted(p, "not measured yet", shares[i])))
        elif b.n_eff < n / 2 and _older_than(score, policy.uncertainty.half_life_s, now):
            # more than half of its evidence has decayed, and nothing was measured within a
            # half-life (else a pair measured by probes alone, whose long window always weighs
            # less than half its count, would be probed every burst spacing for ever)
            why = f"evidence aged: weight {b.n_eff:.1f} of n={n} after ageing"
            out.append((1, -shares[i], Wanted(p, why, shares[i])))
        elif i != lead and n < policy.min_samples and shares[i] >= CONTENDER:
            # by count: under the half-life a pair probed every burst spacing never weighs
            # min_samples, so a weight test would probe a close runner-up for ever
            why = (
                f"plausibly the best on thin evidence (n={n}, weight {b.n_eff:.1f}): "
                f"best in {shares[i]:.0%} of draws ({_range(b)})"
            )
            out.append((2, -shares[i], Wanted(p, why, shares[i])))
        elif score is not None and _censored_tail(score, policy.min_samples):
            why = (
                f"censored tail: {score.n_censored} of n={n} cut off before a first token "
                f"(hedged away or cancelled), {score.n_probe} probes to see beyond them"
            )
            out.append((3, -shares[i], Wanted(p, why, shares[i])))
    out.sort(key=lambda row: (row[0], row[1]))
    return [w for _, _, w in out]


def out_of_contention(
    policy: ModelPolicy,
    deployments: Sequence[tuple[str, str]],
    scores: Mapping[Pair, Score],
    model: str,
    incumbent: str | None = None,
) -> frozenset[str]:
    """The model's pairs that are clearly worse: measured at least `probe.burst_min`
    times, their evidence fresh, not the leader, and best in under 5% of the posterior
    draws (a pair's draws mix in the model's pooled prior, so a few always win).
    A new pair's burst of probes ends there rather than at `min_samples` (measuring a pair
    nobody would choose buys nothing); should its range come to overlap the leader's again
    (the leader slows, its evidence ages), `evidence_wanted` asks for it."""
    contest = _contest(policy, deployments, scores, model, incumbent)
    if contest is None or not contest[1]:
        return frozenset()
    pairs, filled, shares, lead = contest
    floor = policy.probe.burst_min
    out = set()
    for i, p in enumerate(pairs):
        score = scores.get(Pair(model, p))
        if score is None or i == lead or shares[i] >= CLEARLY_WORSE or score.n < floor:
            continue
        if filled[i].n_eff >= score.n / 2:  # not aged
            out.add(p)
    return frozenset(out)


def _contest(
    policy: ModelPolicy,
    deployments: Sequence[tuple[str, str]],
    scores: Mapping[Pair, Score],
    model: str,
    incumbent: str | None,
) -> tuple[list[str], list[Belief], list[float], int] | None:
    """The model's usable pairs, their beliefs (the prior for an unmeasured one), their
    chances of being best and the leader; None for fewer than two pairs; empty beliefs,
    shares and leader 0 when nothing is measured yet."""
    pairs = [p for p, _ in deployments if policy.is_usable(p)]
    if len(pairs) < 2:
        return None
    beliefs: list[Belief | None] = [
        (s.belief if (s := scores.get(Pair(model, p))) is not None else None) for p in pairs
    ]
    prior = next((b.prior for b in beliefs if b is not None and b.prior is not None), None)
    if prior is None:
        return pairs, [], [], 0
    filled = [b or prior for b in beliefs]
    cut = 1.0 - policy.hysteresis
    advantage = [cut if p == incumbent else 1.0 for p in pairs]
    shares = win_shares(filled, advantage)
    lead = min(range(len(pairs)), key=lambda i: _exploit_key(filled[i], advantage[i]))
    return pairs, filled, shares, lead


def _older_than(score: Score | None, age_s: float, now: float | None) -> bool:
    """The pair's newest sample is older than `age_s` (True when `now` is not given)."""
    age = score.age_s(now) if score is not None and now is not None else None
    return age is None or age > age_s


def _censored_tail(score: Score, min_samples: int) -> bool:
    """At least 5% of the pair's latency observations are censored (a hedge loser is cut
    off at the hedge delay), so its tail is a lower bound until uncensored probes measure
    it: wanted until the window holds `min_samples` probes."""
    return score.n_censored >= max(1.0, 0.05 * score.n) and score.n_probe < min_samples


@dataclass(frozen=True, slots=True)
class _Steady:
    scores: Mapping[Pair, Score]
    policy: ModelPolicy
    deployments: Sequence[tuple[str, str]]
    rate_limits_version: int
    circuits_version: int
    incumbent: str | None
    field: Field  # reused while the inputs are the same: the request only draws
    ranking: Ranking | None  # reused whole when every draw gives it (`_is_steady`)


def _is_steady(ranking: Ranking, policy: ModelPolicy, incumbent: str | None) -> bool:
    """True when `rank()` on the same inputs gives this ranking again at any later time.

    Best mode only (weighted draws anew each time); every eligible pair measured, and the
    ranges of their draws (scaled as ranked, the incumbent's by the hysteresis) disjoint in
    the ranked order: then every draw and any pending count give this same order. (The
    caller checks that its `Field` lasts.)
    """
    if policy.mode != "best" or not ranking.ranked:
        return False
    cut = 1.0 - policy.hysteresis
    below = float("-inf")
    for c in ranking.ranked:
        b = c.score.belief
        if b is None or b.n_eff <= 0.0:
            return False
        f = cut if c.provider == incumbent else 1.0
        if b.lowest * f <= below:
            return False
        below = b.highest * f
    return True
