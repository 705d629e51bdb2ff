"""Hedging, decided: when to ask a second provider, and whether the budget allows it.

Pure and small, so it is unit-tested apart from dispatch (which runs the race). A hedge
fires when the chosen pair has produced no first token after `hedge_delay` (a quantile of
its current TTFT distribution, or a fixed delay, clamped to a range), and at once when the
pair is probably cold right now (its ColdModel, proxy.learning.coldness). `HedgeBudget` keeps
the extra upstream requests within a share of the client requests over a sliding window,
per model, so hedging never doubles load (DESIGN.md: "The Tail at Scale").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from proxy.core.domain import Score
from proxy.learning.coldness import describe
from proxy.settings.policy import Hedge


@dataclass(frozen=True, slots=True)
class HedgeDelay:
    """Seconds to wait for the primary's first token, and why that many (for the decision).
    `trigger`: "late" (a delay) or "cold" (the pair is probably cold: at once)."""

    seconds: float
    basis: str
    trigger: str = "late"


def hedge_delay(policy: Hedge, primary: Score, now: float = 0.0, busy: bool = False) -> HedgeDelay:
    """The delay after which `primary` is hedged: none when the pair is at least
    `policy.cold_chance` likely cold at `now` (wall clock; `busy`: it has a request in
    flight, so it is not idle); else `policy.delay_s` when set, else the pair's
    `policy.quantile` (its window's, Kaplan-Meier) clamped to [min, max]; a pair with no
    figure yet waits `max_delay_s`."""
    cold = primary.cold
    if cold is not None and cold.chance(now, busy) >= policy.cold_chance:
        return HedgeDelay(0.0, describe(primary.provider, cold, now, busy), "cold")
    if policy.delay_s is not None:
        return HedgeDelay(policy.delay_s, f"fixed {policy.delay_s:g} s")
    figure = getattr(primary, policy.quantile)
    if figure is None or not math.isfinite(figure):
        return HedgeDelay(policy.max_delay_s, f"{policy.quantile} unknown: max_delay_s")
    clamped = min(max(figure, policy.min_delay_s), policy.max_delay_s)
    basis = f"{policy.quantile} of {primary.provider} {figure:.3g} s"
    if clamped != figure:
        basis += f", clamped to {clamped:.3g} s"
    return HedgeDelay(clamped, basis)


def expected_saving(primary: Score, trigger: str, waited_s: float, delivered_s: float) -> float:
    """What a winning hedge saved, estimated: the primary's expected TTFT given it had none
    after `waited_s` (its cold-start TTFT when hedged as cold, else its tail mean, at least
    `waited_s`), minus the client's TTFT `delivered_s`; never below 0."""
    expected = primary.tail_mean
    if trigger == "cold" and primary.cold is not None and primary.cold.cold_ttft_s is not None:
        expected = primary.cold.cold_ttft_s
    return max(0.0, max(expected or 0.0, waited_s) - delivered_s)


class SlidingCount:
    """Events in the last `window_s` seconds, in `buckets` time slices (O(1) per event)."""

    __slots__ = ("_counts", "_epochs", "_slice_s")

    def __init__(self, window_s: float, buckets: int = 12) -> None:
        self._slice_s = window_s / buckets
        self._counts = [0] * buckets
        self._epochs = [-1] * buckets

    def add(self, now: float, count: int = 1) -> None:
        epoch = int(now / self._slice_s)
        slot = epoch % len(self._counts)
        if self._epochs[slot] != epoch:
            self._epochs[slot], self._counts[slot] = epoch, 0
        self._counts[slot] += count

    def total(self, now: float) -> int:
        oldest = int(now / self._slice_s) - len(self._counts) + 1
        return sum(c for c, e in zip(self._counts, self._epochs, strict=True) if e >= oldest)


class HedgeBudget:
    """One model's hedge budget: hedges in the window <= share x client requests in it.

    The budget is per replica (every replica keeps its own share, so the fleet's total stays
    within the same share of the fleet's traffic)."""

    __slots__ = ("_hedges", "_requests", "share", "window_s")

    def __init__(self, share: float, window_s: float) -> None:
        self.share = share
        self.window_s = window_s
        self._requests = SlidingCount(window_s)
        self._hedges = SlidingCount(window_s)

    def note_request(self, now: float) -> None:
        self._requests.add(now)

    def try_spend(self, now: float) -> bool:
        """Take one hedge if it fits; False (and nothing taken) when the budget is spent."""
        if self._hedges.total(now) + 1 > self.share * self._requests.total(now):
            return False
        self._hedges.add(now)
        return True

    def left(self, now: float) -> float:
        """Hedges still allowed in the current window (may be fractional)."""
        return max(0.0, self.share * self._requests.total(now) - self._hedges.total(now))


class HedgeBudgets:
    """The budgets of every model, made on first use and remade when the policy changes."""

    __slots__ = ("_budgets",)

    def __init__(self) -> None:
        self._budgets: dict[str, HedgeBudget] = {}

    def for_model(self, model: str, policy: Hedge) -> HedgeBudget:
        """The model's budget (hedges and failover races share it), remade on a new share
        or window."""
        budget = self._budgets.get(model)
        if budget is None or (budget.share, budget.window_s) != (
            policy.budget_share,
            policy.budget_window_s,
        ):
            budget = self._budgets[model] = HedgeBudget(policy.budget_share, policy.budget_window_s)
        return budget

    def left(self, now: float) -> dict[str, float]:
        return {model: budget.left(now) for model, budget in self._budgets.items()}
