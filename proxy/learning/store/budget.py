"""The probe budget's spends in this process: what the memory store offers as `spend_budget`.

The same rules as the Redis store's SPEND_BUDGET script (redis_schema.py), which replicas
sharing a Redis run instead: a sliding window of spends, counted in nano-dollars, capped
overall and per model; a known spend id is settled, never counted twice; a refused spend
counts nothing. Pure: no I/O; the clock is `time.monotonic()` (one process) unless another
is given (a simulation's).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from proxy.learning.store.base import BudgetLimits, BudgetUse, ProbeSpend

NANO = 1_000_000_000  # USD are counted in nano-dollars: integers, exact, as in the script


@dataclass(slots=True)
class _Spent:
    at: float  # when counted (monotonic seconds)
    nano: int
    model: str


class LocalBudget:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._spends: dict[str, _Spent] = {}  # oldest first: insertion order is time order
        self._totals: Counter[str] = Counter()

    def spend(self, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        now = self._expire(limits.window_s)
        nano = round(spend.cost_usd * NANO)
        known = self._spends.get(spend.spend_id)
        if known is not None:
            self._count(known.model, 0, nano - known.nano)
            known.nano = nano
            return self._use(spend.model, limits, now, None)
        refusal = self._refusal(spend.model, nano, limits)
        if refusal is None:
            self._spends[spend.spend_id] = _Spent(now, nano, spend.model)
            self._count(spend.model, 1, nano)
        return self._use(spend.model, limits, now, refusal)

    def refund(self, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        now = self._expire(limits.window_s)
        self._forget(spend.spend_id)
        return self._use(spend.model, limits, now, None)

    def _refusal(self, model: str, nano: int, limits: BudgetLimits) -> str | None:
        per_model_nano = limits.max_cost_usd_per_model
        if self._totals["n"] >= limits.max_probes:
            return "probes"
        if self._totals["usd"] + nano > round(limits.max_cost_usd * NANO):
            return "cost"
        if limits.max_probes_per_model is not None and (
            self._totals[f"n:{model}"] >= limits.max_probes_per_model
        ):
            return "model probes"
        if per_model_nano is not None and (
            self._totals[f"usd:{model}"] + nano > round(per_model_nano * NANO)
        ):
            return "model cost"
        return None

    def _expire(self, window_s: float) -> float:
        now = self._clock()
        while self._spends:
            spend_id, spent = next(iter(self._spends.items()))
            if spent.at > now - window_s:
                break
            self._forget(spend_id)
        return now

    def _forget(self, spend_id: str) -> None:
        spent = self._spends.pop(spend_id, None)
        if spent is not None:
            self._count(spent.model, -1, -spent.nano)

    def _count(self, model: str, probes: int, nano: int) -> None:
        for field, delta in (("n", probes), ("usd", nano), (f"n:{model}", probes),
                             (f"usd:{model}", nano)):  # fmt: skip
            self._totals[field] += delta
            if self._totals[field] == 0:
                del self._totals[field]

    def _use(self, model: str, limits: BudgetLimits, now: float, refusal: str | None) -> BudgetUse:
        oldest = next(iter(self._spends.values()), None)
        return BudgetUse(
            granted=refusal is None,
            refusal=refusal,
            probes=self._totals["n"],
            cost_usd=self._totals["usd"] / NANO,
            model_probes=self._totals[f"n:{model}"],
            model_cost_usd=self._totals[f"usd:{model}"] / NANO,
            frees_in_s=None if oldest is None else oldest.at + limits.window_s - now,
        )
