"""Fixtures of the store tests: real redis-server processes of the tests' own."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from proxy.learning.store.redis_store import RedisStore
from proxy.settings.config import RedisStoreConfig
from tests.redis_server import REDIS_SERVER, RedisServer

if REDIS_SERVER is None:
    pytest.skip("redis-server not on PATH", allow_module_level=True)

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the tests that only read and write their own prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server for this test alone (FLUSHALL, kill, restart); not started yet."""
    server = RedisServer(tmp_path)
    yield server
    server.kill()


@pytest.fixture
def prefix() -> str:
    return f"test{next(_prefixes)}"


StoreFactory = Callable[..., Any]


@pytest.fixture
async def stores() -> AsyncIterator[StoreFactory]:
    """`await stores(url, prefix, **config)` -> a started RedisStore, closed at the end."""
    opened: list[RedisStore] = []

    async def make(url: str, prefix: str, replica: str = "r", **config: Any) -> RedisStore:
        store = RedisStore(
            RedisStoreConfig(kind="redis", url=url, prefix=prefix, **config), replica
        )
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def admin() -> AsyncIterator[Callable[[str], Redis]]:
    """A plain client to look at what the store wrote."""
    clients: list[Redis] = []

    def make(url: str) -> Redis:
        client = Redis.from_url(url, protocol=2)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
