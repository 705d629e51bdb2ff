"""The prober's probe budget: one for the fleet, spent through the store, or this replica's
share of it while the store is down.

Every probe is a spend (`Store.spend_budget`) with an id unique per probe (replica and a
counter) before it is sent: the caps are the fleet's, so N replicas sharing a store spend
one budget, not N. The probe's actual cost settles it afterwards (the same id again); a
probe that was not sent (another replica held its slot) is refunded. When the store raises
StoreUnavailable the spend goes to a LocalBudget of this process instead, against the caps
divided by `prober.expected_replicas`, and `shared` turns false until the store answers
again. Models without traffic in a large catalog (probing.schedule.unused_timing) are one
group in the budget: together they may take `prober.unused_share` of the caps, and models
with traffic may take all but `kept` (the part of that share those models need).

Between answers the prober checks a probe against the last use seen plus the spends it has
started (`check`), so a tick fires no more than the budget seems to hold; the store's answer
is the one that counts. docs/probing.md tells the rules.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.learning.store.base import (
    BudgetLimits,
    BudgetUse,
    ProbeSpend,
    Store,
    StoreUnavailable,
)
from proxy.learning.store.budget import LocalBudget
from proxy.settings.config import ProberConfig

UNUSED_GROUP = "(models without traffic)"  # the budget's "model" of their pooled spends
GROUP_REFUSALS = ("model probes", "model cost")


@dataclass(frozen=True, slots=True)
class Ticket:
    """A granted spend: settled or refunded where it was counted."""

    spend: ProbeSpend
    limits: BudgetLimits
    shared: bool  # counted in the store (else in this replica's share)


@dataclass(frozen=True, slots=True)
class Refusal:
    why: str
    pauses: bool  # the whole budget (or its part for models with traffic) is spent
    never_fits: bool = False  # the probe alone costs more than its part's whole cost cap


class ProbeBudget:
    def __init__(
        self, settings: ProberConfig, store: Store, replica: str, window_s: float,
        redact: Callable[[str], str], clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.max_probes = settings.max_probes_per_hour
        self.max_cost_usd = settings.max_cost_per_hour_usd
        self.expected_replicas = settings.expected_replicas
        self.unused_share = settings.unused_share
        self.window_s = window_s
        self.kept = 0.0  # share of the caps kept for models without traffic (set each tick)
        self.shared = True
        self.why_local: str | None = None  # the store's error while spending the local share
        self.use: BudgetUse | None = None  # the last use seen (of the current mode)
        self.group: BudgetUse | None = None  # the last use seen by a spend of UNUSED_GROUP
        self._store = store
        self._replica = replica
        self._redact = redact
        self._clock = clock
        self._use_at = 0.0
        self._local = LocalBudget(clock)
        self._ids = itertools.count(1)
        # spends fired and not answered yet: probes, their estimated USD, pooled ones
        self._held_probes, self._held_usd, self._held_pooled = 0, 0.0, 0
        self._held_pooled_usd = 0.0

    # -- caps ---------------------------------------------------------------------------

    def caps(self, shared: bool) -> tuple[int, float]:
        """The fleet's caps, or this replica's share of them."""
        if shared:
            return self.max_probes, self.max_cost_usd
        return self.max_probes // self.expected_replicas, self.max_cost_usd / self.expected_replicas

    def limits(self, pooled: bool, shared: bool) -> BudgetLimits:
        probes, cost = self.caps(shared)
        if pooled:
            return BudgetLimits(self.window_s, probes, cost, math.floor(probes * self.unused_share),
                                cost * self.unused_share)  # fmt: skip
        # what the unused models have not spent of their kept part (as last seen)
        group_probes, group_usd = (0, 0.0) if self.group is None else (
            self.group.model_probes, self.group.model_cost_usd)  # fmt: skip
        kept = max(0, round(probes * self.kept) - group_probes)
        kept_usd = max(0.0, cost * self.kept - group_usd)
        return BudgetLimits(self.window_s, probes - kept, cost - kept_usd)

    # -- before a tick fires a probe ----------------------------------------------------

    def check(self, pooled: bool, cost_usd: float) -> Refusal | None:
        """Whether a probe estimated at `cost_usd` seems to fit: the last use seen plus the
        spends started since. None: fire it (the store decides)."""
        limits = self.limits(pooled, self.shared)
        if cost_usd > limits.max_cost_usd:  # waiting would not help: refused, not paused
            why = (f"a probe of ~${cost_usd:.6f} exceeds the whole cost cap of "
                   f"${limits.max_cost_usd:g} {self._suffix()}: price the pair or raise "
                   "prober.max_cost_per_hour_usd")  # fmt: skip
            return Refusal(why, False, never_fits=True)
        probes = self._held_probes + (self.use.probes if self.use is not None else 0)
        spent = self._held_usd + (self.use.cost_usd if self.use is not None else 0.0)
        if probes >= limits.max_probes:
            return Refusal(self._probe_cap(probes, limits.max_probes), True)
        if spent + cost_usd > limits.max_cost_usd + 1e-12:
            return Refusal(self._cost_cap(spent, limits.max_cost_usd, cost_usd), True)
        if pooled and self.group is not None:
            group = self.group.model_probes + self._held_pooled
            if limits.max_probes_per_model is not None and group >= limits.max_probes_per_model:
                return Refusal(self._group_cap(group, limits.max_probes_per_model), False)
            group_usd = self.group.model_cost_usd + self._held_pooled_usd
            cap_usd = limits.max_cost_usd_per_model
            if cap_usd is not None and group_usd + cost_usd > cap_usd + 1e-12:
                return Refusal(self._group_cost_cap(group_usd, cap_usd), False)
        return None

    def age_s(self) -> float | None:
        """How long ago the use was last seen (None: never)."""
        return None if self.use is None else self._clock() - self._use_at

    def hold(self, pooled: bool, cost_usd: float) -> None:
        """A probe was fired: count it until its spend is answered."""
        self._held_probes += 1
        self._held_usd += cost_usd
        self._held_pooled += pooled
        self._held_pooled_usd += cost_usd if pooled else 0.0

    # -- in the probe's task --------------------------------------------------------------

    async def spend(
        self, model: str, pooled: bool, cost_usd: float, held: bool = True
    ) -> Ticket | Refusal:
        """Count one probe (of `model`, or of the unused group when `pooled`) at its
        estimated cost; `held`: the tick counted it with `hold`."""
        spend = ProbeSpend(f"{self._replica}:{next(self._ids)}",
                           UNUSED_GROUP if pooled else model, cost_usd)  # fmt: skip
        try:
            use, limits, shared = await self._count(spend, pooled)
        finally:
            if held:
                self._held_probes -= 1
                self._held_usd -= cost_usd
                self._held_pooled -= pooled
                self._held_pooled_usd -= cost_usd if pooled else 0.0
        if use.granted:
            return Ticket(spend, limits, shared)
        if use.refusal == "probes":
            return Refusal(self._probe_cap(use.probes, limits.max_probes), True)
        if use.refusal == "cost":
            return Refusal(self._cost_cap(use.cost_usd, limits.max_cost_usd, cost_usd), True)
        if use.refusal == "model cost":
            assert limits.max_cost_usd_per_model is not None
            return Refusal(self._group_cost_cap(use.model_cost_usd, limits.max_cost_usd_per_model),
                           False)  # fmt: skip
        assert limits.max_probes_per_model is not None
        return Refusal(self._group_cap(use.model_probes, limits.max_probes_per_model), False)

    async def settle(self, ticket: Ticket, cost_usd: float) -> None:
        """The probe cost what it reported, not what was estimated."""
        settled = ProbeSpend(ticket.spend.spend_id, ticket.spend.model, cost_usd)
        if not ticket.shared:
            self._seen_again(self._local.spend(settled, ticket.limits), ticket)
            return
        try:
            use = await self._store.spend_budget(settled, ticket.limits)
        except StoreUnavailable:
            return  # the estimate stays counted; it leaves with the window
        self._seen_again(use, ticket)

    async def refund(self, ticket: Ticket) -> None:
        """The probe was not sent: uncount it."""
        if not ticket.shared:
            self._seen_again(self._local.refund(ticket.spend, ticket.limits), ticket)
            return
        try:
            use = await self._store.refund_budget(ticket.spend, ticket.limits)
        except StoreUnavailable:
            return  # counted until it leaves the window: the budget errs on the safe side
        self._seen_again(use, ticket)

    async def read(self) -> None:
        """Refresh the use seen (a refund of no spend only reads it): the store's when it
        answers (back to the fleet's budget), else the local share's."""
        probe = ProbeSpend("(read)", UNUSED_GROUP, 0.0)
        limits = self.limits(True, True)
        try:
            use = await self._store.refund_budget(probe, limits)
        except StoreUnavailable as exc:
            self._down(exc)
            use = self._local.refund(probe, self.limits(True, False))
        else:
            self._up()
        self._seen(use, True)

    # -- what admin and metrics show ------------------------------------------------------

    def used(self) -> tuple[int, float]:
        """The use of the current mode's budget, as last seen (probes, USD)."""
        if self.use is None:
            return 0, 0.0
        return self.use.probes, self.use.cost_usd

    def frees_in_s(self) -> float | None:
        """When the oldest spend seen leaves the window, from now."""
        if self.use is None or self.use.frees_in_s is None:
            return None
        return max(0.0, self.use.frees_in_s - (self._clock() - self._use_at))

    # -- inside -------------------------------------------------------------------------

    async def _count(self, spend: ProbeSpend, pooled: bool) -> tuple[BudgetUse, BudgetLimits, bool]:
        limits = self.limits(pooled, True)
        try:
            use = await self._store.spend_budget(spend, limits)
        except StoreUnavailable as exc:
            self._down(exc)
            limits = self.limits(pooled, False)
            use = self._local.spend(spend, limits)
            self._seen(use, pooled)
            return use, limits, False
        self._up()
        self._seen(use, pooled)
        return use, limits, True

    def _seen_again(self, use: BudgetUse, ticket: Ticket) -> None:
        if ticket.shared == self.shared:  # the mode has not changed since it was counted
            self._seen(use, ticket.spend.model == UNUSED_GROUP)

    def _seen(self, use: BudgetUse, pooled: bool) -> None:
        self.use = use
        self._use_at = self._clock()
        if pooled:
            self.group = use

    def _down(self, exc: StoreUnavailable) -> None:
        if self.shared:
            self.use, self.group = None, None  # the local share's use replaces the fleet's
        self.shared = False
        self.why_local = self._redact(str(exc))

    def _up(self) -> None:
        if not self.shared:
            self.use, self.group = None, None
        self.shared = True
        self.why_local = None

    def _suffix(self) -> str:
        hour = f"per {self.window_s:.4g} s"
        if not self.shared:
            return f"{hour} (this replica's share of {self.expected_replicas}: store unavailable)"
        return hour

    def _probe_cap(self, probes: int, cap: int) -> str:
        kept = "" if self.kept == 0 else ", the rest kept for models without traffic"
        return f"probe cap reached: {probes} of {cap} probes {self._suffix()}{kept}"

    def _cost_cap(self, spent: float, cap: float, next_usd: float) -> str:
        return (f"cost cap reached: ${spent:.6f} of ${cap:g} {self._suffix()} "
                f"(next probe ~${next_usd:.6f})")  # fmt: skip

    def _group_cost_cap(self, spent: float, cap: float) -> str:
        return (f"models without traffic: their share reached, ${spent:.6f} of ${cap:g} "
                f"{self._suffix()}")  # fmt: skip

    def _group_cap(self, probes: int, cap: int) -> str:
        return (f"models without traffic: their share reached, {probes} of {cap} probes "
                f"{self._suffix()}")  # fmt: skip
