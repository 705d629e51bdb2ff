"""What every store's probe budget does, run against the memory store, one Redis and a Redis
Cluster: replicas sharing a store spend one budget, atomically, in a sliding window."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from proxy.learning.store.base import BudgetLimits, ProbeSpend, Store
from tests.helpers import wait_until

_ids = itertools.count()


def spend(model: str, cost_usd: float) -> ProbeSpend:
    return ProbeSpend(f"spend-{next(_ids)}", model, cost_usd)


async def replicas_spend_one_budget(replicas: Sequence[Store]) -> None:
    """Many spends at once from every replica: exactly the cap's worth are granted."""
    limits = BudgetLimits(window_s=60, max_probes=10, max_cost_usd=100.0)
    spends = [spend(f"m{i % 4}", 0.001) for i in range(30)]
    uses = await asyncio.gather(
        *(replicas[i % len(replicas)].spend_budget(s, limits) for i, s in enumerate(spends))
    )
    assert sum(use.granted for use in uses) == 10
    assert {use.refusal for use in uses if not use.granted} == {"probes"}
    last = await replicas[0].refund_budget(spend("m0", 0), limits)  # unknown id: a read
    assert (last.probes, round(last.cost_usd, 9)) == (10, 0.01)


async def caps_settles_and_refunds(store: Store) -> None:
    limits = BudgetLimits(window_s=60, max_probes=5, max_cost_usd=0.012,
                          max_probes_per_model=2, max_cost_usd_per_model=0.006)  # fmt: skip
    a1, a2, a3 = spend("a", 0.002), spend("a", 0.002), spend("a", 0.001)
    assert (await store.spend_budget(a1, limits)).granted
    use = await store.spend_budget(a2, limits)
    assert (use.probes, use.model_probes, use.granted) == (2, 2, True)
    assert (await store.spend_budget(a3, limits)).refusal == "model probes"
    settled = await store.spend_budget(ProbeSpend(a1.spend_id, "a", 0.005), limits)  # actual
    assert settled.granted and settled.probes == 2  # a settle counts no second probe
    assert round(settled.model_cost_usd, 9) == 0.007
    again = await store.spend_budget(ProbeSpend(a1.spend_id, "a", 0.005), limits)  # a retry
    assert again.probes == 2 and round(again.cost_usd, 9) == 0.007
    b = await store.spend_budget(spend("b", 0.006), limits)
    assert b.refusal == "cost" and not b.granted and b.model_probes == 0  # 0.007 + 0.006
    refunded = await store.refund_budget(a2, limits)
    assert (refunded.probes, round(refunded.cost_usd, 9)) == (1, 0.005)
    assert (await store.spend_budget(spend("b", 0.004), limits)).granted
    assert (await store.spend_budget(spend("a", 0.0015), limits)).refusal == "model cost"


async def spends_leave_the_window(store: Store) -> None:
    limits = BudgetLimits(window_s=0.5, max_probes=1, max_cost_usd=1.0)
    first = await store.spend_budget(spend("a", 0.1), limits)
    assert first.granted and first.frees_in_s is not None and 0 < first.frees_in_s <= 0.5
    refused = await store.spend_budget(spend("a", 0.1), limits)
    assert refused.refusal == "probes"

    async def room_again() -> bool:
        return (await store.spend_budget(spend("a", 0.1), limits)).granted

    await wait_until(room_again, timeout=5)
    idle = await store.refund_budget(spend("a", 0), BudgetLimits(0.5, 1, 1.0))
    assert idle.probes == 1 and idle.model_probes == 1
