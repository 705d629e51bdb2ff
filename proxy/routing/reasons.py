"""A ranking's reason in words, and the win shares it quotes.

Rendered only when someone reads a decision (rankings hold it as a LazyText): the text costs
more than the ranking itself. `WinShares` remembers each set of beliefs' shares, because the
requests routed on one snapshot share them; the routing component owns one instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy.core.domain import Belief, Candidate
from proxy.learning.coldness import describe
from proxy.learning.prefill import describe_size

if TYPE_CHECKING:
    from proxy.routing.ranking import Standing

LABELS = {
    "tail_mean": "tail mean (slowest 5%)",
    "p50": "median",
    "expected": "expected TTFT (cold chance now)",
}


class WinShares:
    """Share of the posterior draws in which each pair is the best (Thompson's chance of
    choosing it, before pending evidence), remembered for the same beliefs."""

    __slots__ = ("_known", "_size")

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._known: dict[
            tuple[tuple[int, ...], tuple[float, ...]], tuple[tuple[Belief, ...], list[float]]
        ] = {}

    def __call__(self, beliefs: Sequence[Belief], advantage: Sequence[float]) -> list[float]:
        key = (tuple(map(id, beliefs)), tuple(advantage))
        known = self._known.get(key)
        if known is not None:
            return known[1]
        k = min(len(b.draws) for b in beliefs)
        scaled = [[d * f for d in b.draws[:k]] for b, f in zip(beliefs, advantage, strict=True)]
        wins = [0] * len(beliefs)
        for row in zip(*scaled, strict=True):
            wins[row.index(min(row))] += 1
        shares = [w / k for w in wins]
        if len(self._known) >= self._size:
            self._known.clear()
        self._known[key] = (tuple(beliefs), shares)  # holds the beliefs: their ids stay theirs
        return shares


def ranked(standing: Standing, first: Candidate, exploring: bool, shares: WinShares) -> str:
    """Why `first` leads a best-mode ranking: the leader, holding, or an exploration."""
    view, eligible, beliefs = standing.view, standing.eligible, standing.beliefs
    policy = view.policy
    won = shares(beliefs, standing.advantage)
    label = LABELS.get(policy.objective, policy.objective)
    rows = sorted(range(len(eligible)), key=lambda i: -won[i])
    figures = "; ".join(
        _figures(eligible[i], beliefs[i], won[i], policy.min_samples) for i in rows[:4]
    )
    if policy.objective == "expected":
        colds = [describe(c.provider, c.score.cold, view.now) for c in eligible if c.score.cold]
        if colds:
            figures += " (" + "; ".join(colds) + ")"
    lead = eligible[standing.leader]
    if exploring:
        i = eligible.index(first)
        head = (
            f"exploring {first.provider}: best in {won[i]:.0%} of posterior draws, its "
            f"plausible {label} overlaps the leader {lead.provider}'s"
        )
    elif standing.holding:
        head = (
            f"holding {lead.provider}, the incumbent: {eligible[standing.unscaled].provider}'s "
            f"estimated {label} is not {policy.hysteresis:.0%} lower"
        )
    else:
        head = f"{lead.provider} has the lowest estimated {label}"
    if view.size_class:  # a long prompt: the pairs are compared at its size
        head = f"for {describe_size(view.prompt_tokens)} prompt tokens: {head}"
    return f"{head}: {figures}"


def weighted(chosen: Candidate, eligible: list[Candidate], beliefs: list[Belief]) -> str:
    total = sum(1.0 / max(b.estimate, 1e-6) for b in beliefs)
    b = beliefs[eligible.index(chosen)]
    share = (1.0 / max(b.estimate, 1e-6)) / total
    return f"weighted draw: {chosen.provider} had a {share:.0%} share ({belief_range(b)})"


def warm_up(first: Candidate, waiting: int) -> str:
    return (
        f"no pair of the model measured yet: measuring {first.provider} first "
        f"(n={first.score.n}, {waiting} attempts pending)"
    )


def trial(excluded: Sequence[Candidate], trials: Sequence[Candidate]) -> str:
    return (
        f"every provider is out ({exclusions(excluded)}): "
        f"trial request to {', '.join(c.provider for c in trials)}"
    )


def belief_range(b: Belief) -> str:
    label = LABELS.get(b.objective, b.objective)
    return f"{label} {b.estimate:.3f} s, 90% range {b.low:.3f}-{b.high:.3f} s"


def _figures(c: Candidate, b: Belief, share: float, min_samples: int) -> str:
    s = c.score
    if s.n == 0:
        return (
            f"{c.provider}: not measured, the model's prior: {belief_range(b)}, best in "
            f"{share:.0%} of draws"
        )
    proven = "proven" if s.is_proven else f"unproven, below {min_samples}"
    cv = f"{s.cv:.0%}" if s.cv is not None else "n/a"
    changed = f"; {s.change.describe(c.provider)}" if s.change is not None else ""
    return (
        f"{c.provider}: {belief_range(b)}, n={s.n} ({proven}; {s.n_censored} censored, weight "
        f"{b.n_eff:.1f} after ageing), p95 {s.p95:.3f} s, median {s.median:.3f} s, CV {cv}, "
        f"errors {s.error_rate:.0%}, best in {share:.0%} of draws{changed}"
    )


def exclusions(excluded: Sequence[Candidate]) -> str:
    return "; ".join(f"{c.provider}: {c.excluded_because}" for c in excluded) or "none configured"
