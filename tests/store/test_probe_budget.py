"""The prober's budget (probing.budget) on a real Redis shared by three replicas, and its
local share when the store is unreachable (a RedisStore pointed at a closed port)."""

from __future__ import annotations

import asyncio

from proxy.learning.store.memory import MemoryStore
from proxy.learning.store.redis_store import RedisStore
from proxy.probing.budget import UNUSED_GROUP, ProbeBudget, Refusal, Ticket
from proxy.settings.config import MemoryStoreConfig, ProberConfig, RedisStoreConfig
from tests.helpers import free_port
from tests.redis_server import RedisServer
from tests.store.conftest import StoreFactory


def settings(**fields: object) -> ProberConfig:
    return ProberConfig.model_validate(fields)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_three_replicas_spend_one_budget_settle_and_refund(
    shared_redis: RedisServer, stores: StoreFactory, prefix: str
) -> None:
    config = settings(max_probes_per_hour=10, max_cost_per_hour_usd=1.0)
    budgets = [
        ProbeBudget(config, await stores(shared_redis.url, prefix, f"r{i}"), f"r{i}", 3600.0, str)
        for i in range(3)
    ]
    spent = await asyncio.gather(*(b.spend("m", False, 0.01, held=False)
                                   for b in budgets for _ in range(10)))  # fmt: skip
    granted = [s for s in spent if isinstance(s, Ticket)]
    refused = [s for s in spent if isinstance(s, Refusal)]
    assert len(granted) == 10 and len(refused) == 20
    assert all(r.pauses and "probe cap reached: 10 of 10" in r.why for r in refused)
    assert len({t.spend.spend_id for t in granted}) == 10  # replica + counter: unique
    assert all(t.shared for t in granted) and all(b.shared for b in budgets)
    await budgets[0].refund(granted[0])
    await budgets[1].settle(granted[1], 0.5)
    await budgets[2].read()
    assert budgets[2].used() == (9, 0.5 + 8 * 0.01)
    assert budgets[2].check(False, 0.01) is None  # one free again
    assert budgets[2].check(False, 0.6) is not None  # but not for $0.6


async def test_models_without_traffic_take_their_share_and_leave_the_rest_for_the_used() -> None:
    config = settings(max_probes_per_hour=20, max_cost_per_hour_usd=1.0, unused_share=0.25)
    budget = ProbeBudget(config, MemoryStore(MemoryStoreConfig()), "r", 3600.0, str)
    budget.kept = 0.2  # 4 of 20 kept for them while they have not spent them
    used = [await budget.spend("m", False, 0.001, held=False) for _ in range(17)]
    assert sum(isinstance(s, Ticket) for s in used) == 16
    assert budget.check(False, 0.0) is not None and budget.check(True, 0.0) is None
    pooled = [await budget.spend("u", True, 0.001, held=False) for _ in range(5)]
    assert [isinstance(s, Ticket) for s in pooled] == [True] * 4 + [False]
    last = pooled[-1]
    assert isinstance(last, Refusal) and last.pauses  # the whole budget: 20 of 20


async def test_the_unused_group_is_capped_at_its_share_and_the_used_take_what_it_left() -> None:
    config = settings(max_probes_per_hour=20, max_cost_per_hour_usd=1.0, unused_share=0.25)
    budget = ProbeBudget(config, MemoryStore(MemoryStoreConfig()), "r", 3600.0, str)
    budget.kept = 0.2
    pooled = [await budget.spend("u", True, 0.001, held=False) for _ in range(6)]
    assert [isinstance(s, Ticket) for s in pooled] == [True] * 5 + [False]
    last = pooled[-1]
    assert isinstance(last, Refusal) and not last.pauses and "their share" in last.why
    assert budget.group is not None and budget.group.model_probes == 5
    assert isinstance(pooled[0], Ticket) and pooled[0].spend.model == UNUSED_GROUP
    assert budget.check(True, 0.0) is not None  # the group's cap, seen without a store call
    used = [await budget.spend("m", False, 0.001, held=False) for _ in range(16)]
    assert sum(isinstance(s, Ticket) for s in used) == 15  # the kept 4 are spent: 20 - 5


async def test_store_unreachable_each_replica_spends_its_share_until_the_window_moves() -> None:
    config = settings(max_probes_per_hour=10, max_cost_per_hour_usd=1.0, expected_replicas=3)
    clock = Clock()
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    unreachable = RedisStoreConfig(
        kind="redis", url=url, connect_timeout_s=0.2, socket_timeout_s=0.2
    )
    stores = [RedisStore(unreachable, f"r{i}") for i in range(3)]
    try:
        budgets = []
        for i, store in enumerate(stores):
            await store.start()
            budgets.append(ProbeBudget(config, store, f"r{i}", 3600.0, str, clock))
        for budget in budgets:
            spent = [await budget.spend("m", False, 0.01, held=False) for _ in range(5)]
            assert [isinstance(s, Ticket) for s in spent] == [True] * 3 + [False] * 2
            assert not budget.shared and budget.why_local is not None
            assert budget.caps(False) == (3, 1.0 / 3)
            refused = spent[-1]
            assert isinstance(refused, Refusal) and "share of 3" in refused.why
            assert budget.used() == (3, 0.03)
        clock.now += 3600.0  # the window has moved on
        await budgets[0].read()
        assert budgets[0].used() == (0, 0.0)
        assert isinstance(await budgets[0].spend("m", False, 0.01, held=False), Ticket)
    finally:
        for store in stores:
            await store.close()


async def test_the_groups_cost_cap_is_checked_before_a_spend_and_named_when_refused() -> None:
    """The unused group's cost share binds before its probe share at a high price: a tick
    must see it (else every tick sends a wave of spends the store refuses)."""
    config = settings(max_probes_per_hour=600, max_cost_per_hour_usd=0.04, unused_share=0.25)
    budget = ProbeBudget(config, MemoryStore(MemoryStoreConfig()), "r", 3600.0, str)
    pooled = [await budget.spend("u", True, 0.004, held=False) for _ in range(3)]
    assert [isinstance(s, Ticket) for s in pooled] == [True, True, False]  # $0.01 a share
    refused = pooled[-1]
    assert isinstance(refused, Refusal) and not refused.pauses and "$0.008" in refused.why
    seen = budget.check(True, 0.004)
    assert seen is not None and not seen.pauses and "their share" in seen.why
    assert budget.check(False, 0.004) is None  # the used models' part is untouched


async def test_a_probe_dearer_than_the_whole_cap_is_refused_without_pausing() -> None:
    """A long probe at the unknown price ($0.04) against a cap it can never fit: waiting
    would not help, so it is refused alone and the prober is not paused for it."""
    config = settings(max_probes_per_hour=600, max_cost_per_hour_usd=0.05, unused_share=0.25)
    budget = ProbeBudget(config, MemoryStore(MemoryStoreConfig()), "r", 3600.0, str)
    budget.kept = 0.25
    refused = budget.check(False, 0.0405)  # the used models' part: $0.0375
    assert refused is not None and refused.never_fits and not refused.pauses
    assert "prober.max_cost_per_hour_usd" in refused.why
    assert budget.check(False, 0.0005) is None


async def test_the_use_seen_ages_until_it_is_read_again() -> None:
    clock = Clock()
    budget = ProbeBudget(settings(), MemoryStore(MemoryStoreConfig()), "r", 3600.0, str, clock)
    assert budget.age_s() is None  # never seen: the prober reads before its first tick
    await budget.read()
    clock.now += 25.0
    assert budget.age_s() == 25.0  # older than 10 s of an hour: the prober reads again
    await budget.read()
    assert budget.age_s() == 0.0
