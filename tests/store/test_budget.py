"""The fleet's probe budget on one Redis and in the memory store: one contract
(budget_contract.py), one slot for its keys, nothing left behind once the window passes."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from redis.crc import key_slot

from proxy.learning.store.base import BudgetLimits, ProbeSpend
from proxy.learning.store.memory import MemoryStore
from proxy.learning.store.redis_schema import budget_keys
from proxy.settings.config import MemoryStoreConfig
from tests.redis_server import RedisServer
from tests.store import budget_contract
from tests.store.conftest import StoreFactory


async def test_three_redis_replicas_spend_one_budget(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory
) -> None:
    replicas = [await stores(shared_redis.url, prefix, replica=f"r{i}") for i in range(3)]
    await budget_contract.replicas_spend_one_budget(replicas)


async def test_redis_caps_settles_refunds_and_window(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory
) -> None:
    await budget_contract.caps_settles_and_refunds(await stores(shared_redis.url, prefix))
    await budget_contract.spends_leave_the_window(await stores(shared_redis.url, prefix + "w"))


async def test_memory_store_budget_alike() -> None:
    store = MemoryStore(MemoryStoreConfig())
    await budget_contract.replicas_spend_one_budget([store])
    await budget_contract.caps_settles_and_refunds(MemoryStore(MemoryStoreConfig()))
    await budget_contract.spends_leave_the_window(MemoryStore(MemoryStoreConfig()))


async def test_budget_keys_share_a_slot_and_expire_with_the_window(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    store = await stores(shared_redis.url, prefix)
    await store.spend_budget(ProbeSpend("x", "model-a", 0.5), BudgetLimits(30, 10, 1.0))
    keys = budget_keys(prefix)
    assert len({key_slot(key.encode()) for key in keys}) == 1
    redis = admin(shared_redis.url)
    for key in keys:
        assert 0 < await redis.pttl(key) <= 30_000, key
    assert await redis.hgetall(keys[2]) == {
        b"n": b"1",
        b"usd": b"500000000",
        b"n:model-a": b"1",
        b"usd:model-a": b"500000000",
    }
    await store.refund_budget(ProbeSpend("x", "model-a", 0.5), BudgetLimits(30, 10, 1.0))
    assert await redis.hgetall(keys[2]) == {}  # totals that reach zero are deleted
