"""Clients' limits on one Redis and in the memory store: one contract (clients_contract.py),
every key of a client in one slot, nothing left behind once the window passes."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from redis.crc import key_slot

from proxy.learning.store.base import ClientAsk, ClientLimits
from proxy.learning.store.memory import MemoryStore
from proxy.learning.store.redis_schema import client_keys
from proxy.settings.config import MemoryStoreConfig
from tests.helpers import wait_until
from tests.redis_server import RedisServer
from tests.store import clients_contract
from tests.store.conftest import StoreFactory


async def test_three_redis_replicas_admit_one_limit(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory
) -> None:
    replicas = [await stores(shared_redis.url, prefix, replica=f"r{i}") for i in range(3)]
    await clients_contract.replicas_admit_one_limit(replicas, "app")


async def test_redis_tokens_slots_spend_and_windows(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory
) -> None:
    store = await stores(shared_redis.url, prefix)
    await clients_contract.tokens_slots_and_spend(store, "app")
    await clients_contract.requests_leave_the_window(store, "windowed")
    await clients_contract.a_slot_frees_itself_after_hold_s(store, "held")


async def test_memory_store_client_limits_alike() -> None:
    await clients_contract.replicas_admit_one_limit([MemoryStore(MemoryStoreConfig())], "app")
    store = MemoryStore(MemoryStoreConfig())
    await clients_contract.tokens_slots_and_spend(store, "app")
    await clients_contract.requests_leave_the_window(store, "windowed")
    await clients_contract.a_slot_frees_itself_after_hold_s(store, "held")


async def test_a_clients_keys_share_one_slot_and_its_window_expires(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory,
    admin: Callable[[str], Redis],
) -> None:  # fmt: skip
    keys = client_keys(prefix, "app-a", "20250131", "202501")
    assert len({key_slot(k.encode()) for k in keys}) == 1
    store = await stores(shared_redis.url, prefix)
    limits = ClientLimits(requests=5, window_s=0.2, hold_s=0.2)
    await store.admit_client(ClientAsk("app-a", "r1", 3, "20250131", "202501"), limits)
    redis = admin(shared_redis.url)
    window = [k.encode() for k in keys[:4]]  # the window, its tokens, totals and slots

    async def gone() -> bool:
        return await redis.exists(*window) == 0

    await wait_until(gone, timeout=5)
    assert await redis.ttl(keys[6]) > 30 * 86400  # last seen lasts about a month
