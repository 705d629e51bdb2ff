"""Routing's advice to the prober: which pairs a probe should measure, and which are settled.

Learning about a pair should cost probes, not users' requests (DESIGN.md): the prober asks
the routing component for a model's `Evidence`, made here from the same view a ranking is
made from. Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.core.domain import Belief, Change, Pair, Score
from proxy.routing.ranking import ModelView, exploit_key
from proxy.routing.reasons import WinShares, belief_range
from proxy.settings.policy import ModelPolicy

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


@dataclass(frozen=True, slots=True)
class Evidence:
    """What routing says of a model's pairs: the ones it wants measured, most wanted first,
    the ones clearly worse than the leader (their burst of probes ends early), and the
    pairs next in line for failover (kept warm while the model has traffic)."""

    wanted: tuple[Wanted, ...] = ()
    settled: frozenset[str] = frozenset()
    standby: tuple[str, ...] = ()

    def reasons(self) -> Mapping[str, str]:
        """provider -> why it is wanted."""
        return {w.provider: w.reason for w in self.wanted}


def evidence(view: ModelView, shares: WinShares) -> Evidence:
    return Evidence(
        tuple(evidence_wanted(view, shares)), out_of_contention(view, shares), standby(view)
    )


def standby(view: ModelView) -> tuple[str, ...]:
    """The usable pairs next in line after the leader (by the estimates, the incumbent's
    scaled by the hysteresis), `probe.standby.count` of them; none when standby is off."""
    policy = view.policy
    count = policy.probe.standby.count if policy.probe.standby.enabled else 0
    if count == 0:
        return ()
    cut = 1.0 - policy.hysteresis
    keyed = []
    for p in view.pairs:
        if not policy.is_usable(p):
            continue
        score = view.scores.get(Pair(view.model, p))
        belief = score.belief if score is not None else None
        if belief is None or belief.n_eff <= 0.0:
            keyed.append((1, 0.0, p))  # unmeasured: after the measured ones
        else:
            keyed.append((0, belief.estimate * (cut if p == view.incumbent else 1.0), p))
    keyed.sort()
    return tuple(p for _, _, p in keyed[1 : 1 + count])


def evidence_wanted(view: ModelView, shares: WinShares | None = None) -> list[Wanted]:
    """The model's pairs whose measurement could change the routing, most wanted first:
    every pair with fewer than `probe.burst_min` samples since the newest change of any pair
    of the model (learning.change, within `change.remeasure_s`: the market moved);
    never measured; aged (its samples weigh less than half their count after ageing, and
    its newest is older than a half-life); or with fewer samples than `min_samples` yet best
    in at least CONTENDER (10%) of the posterior draws although not the leader; or whose
    tail is censored (hedge losers) and few probes saw past it. A pair with that much fresh
    evidence is left to the prober's own schedule, and so is a model with a single provider
    (there is nothing to decide)."""
    contest = _contest(view, shares or WinShares())
    if contest is None:
        return []
    pairs, filled, won, lead = contest
    if not filled:  # nothing measured: every pair is wanted alike
        return [Wanted(p, "not measured yet", 1.0 / len(pairs)) for p in pairs]
    policy, now = view.policy, view.now
    moved = _market_change(view)
    out: list[tuple[int, float, Wanted]] = []
    for i, (p, b) in enumerate(zip(pairs, filled, strict=True)):
        score = view.scores.get(Pair(view.model, p))
        n = score.n if score is not None else 0
        if moved is not None and (
            score is None or score.n_since(moved[1].at_ts) < policy.probe.burst_min
        ):
            # the market moved: what every pair is now matters, not what it was
            why = f"re-measuring after a change: {moved[1].describe(moved[0])}"
            out.append((0, -won[i], Wanted(p, why, won[i])))
        elif n == 0:
            # a pair with min_samples attempts and no latency is failing: its errors are
            # evidence enough, and the gap schedule and circuit breaker look after it
            if score is None or score.n_attempts < policy.min_samples:
                out.append((0, -won[i], Wanted(p, "not measured yet", won[i])))
        elif b.n_eff < n / 2 and _older_than(score, policy.uncertainty.half_life_s, now):
            # more than half of its evidence has decayed, and nothing was measured within a
            # half-life (else a pair measured by probes alone, whose long window always weighs
            # less than half its count, would be probed every burst spacing for ever)
            why = f"evidence aged: weight {b.n_eff:.1f} of n={n} after ageing"
            out.append((1, -won[i], Wanted(p, why, won[i])))
        elif i != lead and n < policy.min_samples and won[i] >= CONTENDER:
            # by count: under the half-life a pair probed every burst spacing never weighs
            # min_samples, so a weight test would probe a close runner-up for ever
            why = (
                f"plausibly the best on thin evidence (n={n}, weight {b.n_eff:.1f}): "
                f"best in {won[i]:.0%} of draws ({belief_range(b)})"
            )
            out.append((2, -won[i], Wanted(p, why, won[i])))
        elif score is not None and _censored_tail(score, policy.min_samples):
            why = (
                f"censored tail: {score.n_censored} of n={n} cut off before a first token "
                f"(hedged away or cancelled), {score.n_probe} probes to see beyond them"
            )
            out.append((3, -won[i], Wanted(p, why, won[i])))
    out.sort(key=lambda row: (row[0], row[1]))
    return [w for _, _, w in out]


def out_of_contention(view: ModelView, shares: WinShares | None = None) -> frozenset[str]:
    """The model's pairs that are clearly worse: measured at least `probe.burst_min`
    times, their evidence fresh, not the leader, and best in under 5% of the posterior
    draws (a pair's draws mix in the model's pooled prior, so a few always win).
    A new pair's burst of probes ends there rather than at `min_samples` (measuring a pair
    nobody would choose buys nothing); should its range come to overlap the leader's again
    (the leader slows, its evidence ages), `evidence_wanted` asks for it."""
    contest = _contest(view, shares or WinShares())
    if contest is None or not contest[1]:
        return frozenset()
    pairs, filled, won, lead = contest
    floor = view.policy.probe.burst_min
    out = set()
    for i, p in enumerate(pairs):
        score = view.scores.get(Pair(view.model, p))
        if score is None or i == lead or won[i] >= CLEARLY_WORSE or score.n < floor:
            continue
        if filled[i].n_eff >= score.n / 2:  # not aged
            out.add(p)
    return frozenset(out)


def _contest(
    view: ModelView, shares: WinShares
) -> tuple[list[str], list[Belief], list[float], int] | None:
    """The model's usable pairs, their beliefs (the prior for an unmeasured one), their
    chances of being best and the leader; None for fewer than two pairs; empty beliefs,
    shares and leader 0 when nothing is measured yet."""
    policy: ModelPolicy = view.policy
    pairs = [p for p in view.pairs if policy.is_usable(p)]
    if len(pairs) < 2:
        return None
    beliefs: list[Belief | None] = [
        (s.belief if (s := view.scores.get(Pair(view.model, p))) is not None else None)
        for p in pairs
    ]
    prior = next((b.prior for b in beliefs if b is not None and b.prior is not None), None)
    if prior is None:
        return pairs, [], [], 0
    filled = [b or prior for b in beliefs]
    cut = 1.0 - policy.hysteresis
    advantage = [cut if p == view.incumbent else 1.0 for p in pairs]
    won = shares(filled, advantage)
    lead = min(range(len(pairs)), key=lambda i: exploit_key(filled[i], advantage[i]))
    return pairs, filled, won, lead


def _market_change(view: ModelView) -> tuple[str, Change] | None:
    """The newest change of any of the model's pairs detected within `remeasure_s`, with
    its provider; None when none."""
    newest: tuple[str, Change] | None = None
    for p in view.pairs:
        score = view.scores.get(Pair(view.model, p))
        change = score.change if score is not None else None
        if change is None or view.now - change.detected_ts > view.policy.change.remeasure_s:
            continue
        if newest is None or change.at_ts > newest[1].at_ts:
            newest = (p, change)
    return newest


def _older_than(score: Score | None, age_s: float, now: float) -> bool:
    """The pair's newest sample is older than `age_s`."""
    age = score.age_s(now) if score is not None else None
    return age is None or age > age_s


def _censored_tail(score: Score, min_samples: int) -> bool:
    """At least 5% of the pair's latency observations are censored (a hedge loser is cut
    off at the hedge delay), so its tail is a lower bound until uncensored probes measure
    it: wanted until the window holds `min_samples` probes."""
    return score.n_censored >= max(1.0, 0.05 * score.n) and score.n_probe < min_samples
