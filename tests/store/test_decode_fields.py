"""Decode throughput's sample fields through a real Redis: written by one replica, read by
another, beside a member written before the fields existed (the older, shorter array)."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from redis.asyncio import Redis

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.redis_schema import window_key
from tests.redis_server import RedisServer
from tests.store.conftest import StoreFactory

PAIR = Pair("m", "p")


async def test_decode_fields_survive_redis_and_old_members_still_read(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    writer = await stores(shared_redis.url, prefix)
    reader = await stores(shared_redis.url, prefix)
    now = round(time.time(), 3)
    new = Sample("m", "p", Outcome.OK, 0.25, now, 0.1, 2.0, output_tokens=81, decode_s=1.6)
    await writer.append([new], [])
    old = orjson.dumps([now - 1, "ok", 0.5, 0.4, 1.0, None, "passive", 12, "r0"])
    # the member as a replica of the release before these fields wrote it
    await admin(shared_redis.url).zadd(window_key(prefix, PAIR), {old: now - 1})
    window = (await reader.changed_windows({}))[PAIR].samples
    assert [(s.output_tokens, s.decode_s) for s in window] == [(None, None), (81, 1.6)]
    assert window[1] == new and window[1].tokens_per_s == 50.0
