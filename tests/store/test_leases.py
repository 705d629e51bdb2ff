"""Probe leases: one holder per pair and slot, in Redis (SET NX PX under the model's hash tag)
and in the memory store; a lease ends with its slot; a store that is down says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis
from redis.crc import key_slot

from proxy.core.domain import Pair
from proxy.learning.store.base import StoreUnavailable
from proxy.learning.store.memory import MemoryStore
from proxy.learning.store.redis_schema import lease_key, versions_key
from proxy.settings.config import MemoryStoreConfig
from tests.helpers import wait_until
from tests.redis_server import RedisServer
from tests.store.conftest import StoreFactory

PAIR = Pair("model-a", "provider-1")


async def test_of_three_replicas_one_takes_a_slot_and_all_see_who(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    replicas = [await stores(shared_redis.url, prefix, replica=f"r{i}") for i in range(3)]
    holders = await asyncio.gather(
        *(s.try_lease(PAIR, "g7", f"r{i}", 5.0) for i, s in enumerate(replicas))
    )
    assert len(set(holders)) == 1 and holders[0] in {"r0", "r1", "r2"}
    assert await replicas[0].try_lease(PAIR, "g8", "r0", 5.0) == "r0"  # another slot
    assert await replicas[1].try_lease(Pair("model-a", "p2"), "g7", "r1", 5.0) == "r1"
    key = lease_key(prefix, PAIR, "g7")
    assert key_slot(key.encode()) == key_slot(versions_key(prefix, PAIR.model).encode())
    ttl_ms = await admin(shared_redis.url).pttl(key)
    assert 0 < ttl_ms <= 5000


async def test_a_lease_ends_with_its_slot(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory
) -> None:
    one, two = await stores(shared_redis.url, prefix), await stores(shared_redis.url, prefix)
    assert await one.try_lease(PAIR, "b1", "dead", 0.05) == "dead"
    assert await two.try_lease(PAIR, "b1", "alive", 0.05) == "dead"

    async def taken() -> bool:
        return await two.try_lease(PAIR, "b1", "alive", 0.05) == "alive"

    await wait_until(taken, timeout=2)


async def test_memory_store_leases_alike() -> None:
    store = MemoryStore(MemoryStoreConfig())
    assert await store.try_lease(PAIR, "g1", "a", 0.05) == "a"
    assert await store.try_lease(PAIR, "g1", "b", 0.05) == "a"
    assert await store.try_lease(PAIR, "g2", "b", 0.05) == "b"

    async def taken() -> bool:
        return await store.try_lease(PAIR, "g1", "b", 0.05) == "b"

    await wait_until(taken, timeout=2)


async def test_a_lease_on_a_store_that_is_down_raises(
    own_redis: RedisServer, stores: StoreFactory
) -> None:
    store = await stores(own_redis.url, "p", connect_timeout_s=0.2, socket_timeout_s=0.2)
    try:
        await store.try_lease(PAIR, "g1", "r", 1.0)
    except StoreUnavailable as exc:
        assert "probe lease" in str(exc)
    else:
        raise AssertionError("a lease on an unreachable Redis must raise StoreUnavailable")
