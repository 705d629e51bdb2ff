"""RedisStore against real redis-server processes: windows, versions, the decision log, TTLs,
FLUSHALL, and outages at start and mid-traffic."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.base import StoreUnavailable
from proxy.learning.store.buffer import SampleBuffer
from proxy.learning.store.redis_schema import (
    LATE_S,
    VERSION_STEP_MAX,
    changes_key,
    versions_key,
    window_key,
)
from proxy.settings.config import BufferConfig
from tests.helpers import wait_until
from tests.redis_server import RedisServer
from tests.store.conftest import StoreFactory

PAIR = Pair("model-a", "provider-1")
OTHER = Pair("model-a", "provider-2")


def sample(pair: Pair, ts: float, ttft_s: float = 0.25, replica: str = "r1") -> Sample:
    return Sample(pair.model, pair.provider, Outcome.OK, ttft_s, round(ts, 6), replica=replica)


def ttfts(samples: list[Sample]) -> list[float | None]:
    return [s.ttft_s for s in samples]


async def test_window_is_trimmed_by_count_and_age_and_versioned(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    writer = await stores(shared_redis.url, prefix, max_samples=5, max_age_s=60)
    reader = await stores(shared_redis.url, prefix, max_samples=5, max_age_s=60)
    now = time.time()
    too_old = [sample(PAIR, now - 120 + i, ttft_s=9.0) for i in range(3)]
    recent = [sample(PAIR, now - 10 + i, ttft_s=float(i)) for i in range(8)]
    await writer.append(too_old + recent[:4], [])
    await writer.append(recent[4:], [])

    redis = admin(shared_redis.url)
    stored = await redis.zrange(window_key(prefix, PAIR), 0, -1)
    assert len(stored) == 5
    version = int(await redis.hget(versions_key(prefix, PAIR.model), PAIR.provider))
    assert 2 <= version <= 2 * VERSION_STEP_MAX  # two appends, each a random step
    windows = await reader.changed_windows({})
    assert list(windows) == [PAIR]
    assert ttfts(windows[PAIR].samples) == [3.0, 4.0, 5.0, 6.0, 7.0]  # newest 5, oldest first
    assert windows[PAIR].samples == recent[3:]  # a sample read back equals the one written

    known = {PAIR: windows[PAIR].version}
    assert await reader.changed_windows(known) == {}
    await writer.append([sample(OTHER, now)], [])
    changed = await reader.changed_windows(known)
    assert list(changed) == [OTHER]  # only the pair that moved


async def test_replicas_follow_each_other_by_tail_and_late_samples_reach_them(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    one = await stores(shared_redis.url, prefix, replica="one", max_samples=50)
    two = await stores(shared_redis.url, prefix, replica="two", max_samples=50)
    now = time.time()
    await one.append([sample(PAIR, now - 100 + i, replica="one") for i in range(20)], [])
    known = {p: w.version for p, w in (await two.changed_windows({})).items()}
    for step in range(3):
        await two.append([sample(PAIR, now - 50 + step, ttft_s=1.0 + step, replica="two")], [])
        await one.append([sample(PAIR, now - 40 + step, ttft_s=2.0 + step, replica="one")], [])
        late = sample(PAIR, now - 100 + 0.5 + step, ttft_s=7.0, replica="one")  # LATE_S back
        await one.append([late], [])
        windows = await two.changed_windows(known)
        known |= {p: w.version for p, w in windows.items()}
        assert known[PAIR] == windows[PAIR].version

    stored = await admin(shared_redis.url).zrange(window_key(prefix, PAIR), 0, -1)
    view = (await two.changed_windows({}))[PAIR].samples
    assert len(view) == len(stored) == 29
    assert [s.timestamp for s in view] == sorted(s.timestamp for s in view)
    assert ttfts(view).count(7.0) == 3  # the late ones, older than newest - LATE_S
    assert now - 100 + 0.5 < (now - 40) - LATE_S


async def test_the_version_sweep_catches_what_the_change_index_missed(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    writer = await stores(shared_redis.url, prefix)
    reader = await stores(shared_redis.url, prefix, sweep_s=0.001)  # a whole sweep each time
    now = time.time()
    await writer.append([sample(PAIR, now - 1)], [])
    known = {p: w.version for p, w in (await reader.changed_windows({})).items()}
    await writer.append([sample(PAIR, now, ttft_s=2.0), sample(OTHER, now, ttft_s=3.0)], [])
    await admin(shared_redis.url).delete(changes_key(prefix))  # as if the index missed them
    windows = await reader.changed_windows(known)
    assert ttfts(windows[PAIR].samples) == [0.25, 2.0]
    assert ttfts(windows[OTHER].samples) == [3.0]  # a provider new to the reader, found too


async def test_decision_log_is_capped_globally_and_per_model(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory
) -> None:
    store = await stores(shared_redis.url, prefix, max_decisions=4, max_decisions_per_model=2)
    decisions = [{"id": f"d{i}", "model": "model-a" if i % 2 else "model-b"} for i in range(7)]
    await store.append([], decisions[:3])
    await store.append([], decisions[3:])
    other = await stores(shared_redis.url, prefix)
    assert [d["id"] for d in await other.recent_decisions(None, 10)] == ["d6", "d5", "d4", "d3"]
    assert [d["id"] for d in await other.recent_decisions(None, 2)] == ["d6", "d5"]
    assert [d["id"] for d in await other.recent_decisions("model-a", 10)] == ["d5", "d3"]
    assert [d["id"] for d in await other.recent_decisions("model-b", 10)] == ["d6", "d4"]


async def test_every_key_expires_and_a_model_keeps_to_one_slot(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    store = await stores(shared_redis.url, prefix, max_age_s=90.5)
    now = time.time()
    await store.append(
        [sample(PAIR, now), sample(OTHER, now), sample(PAIR, now - 100)],  # the last one late
        [{"id": "d", "model": PAIR.model}],
    )
    redis = admin(shared_redis.url)
    keys = sorted([k.decode() async for k in redis.scan_iter(match=f"{prefix}:*")])
    assert len(keys) == 8, keys  # 2 windows, versions, late, 2 decision lists, index, epoch
    for key in keys:
        assert 0 < await redis.ttl(key) <= math.ceil(90.5), key
    model_keys = [k for k in keys if "{model-a}" in k]
    assert len(model_keys) == 5
    assert len({key_slot(k.encode()) for k in model_keys}) == 1
    assert len({key_slot(k.encode()) for k in keys if "{_global}" in k}) == 1


async def test_flushall_empties_the_windows_and_they_refill(
    own_redis: RedisServer, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    own_redis.start()
    writer = await stores(own_redis.url, "ttft")
    reader = await stores(own_redis.url, "ttft")
    now = time.time()
    await writer.append([sample(PAIR, now - 5 + i, replica="w") for i in range(5)], [])
    windows = await reader.changed_windows({})
    known = {p: w.version for p, w in windows.items()}
    assert len(windows[PAIR].samples) == 5

    await admin(own_redis.url).flushall()
    windows = await reader.changed_windows(known)
    assert windows[PAIR].samples == []  # the data went; the view says so
    known |= {p: w.version for p, w in windows.items()}
    await writer.append([sample(PAIR, now + 1, ttft_s=3.0)], [])  # version 1 again in Redis
    windows = await reader.changed_windows(known)
    assert ttfts(windows[PAIR].samples) == [3.0]
    known |= {p: w.version for p, w in windows.items()}

    # Emptied again, and refilled by the same writer before the reader looks: the new epoch
    # still tells, though the versions may have come back to where the reader left them.
    await admin(own_redis.url).flushall()
    await writer.append([sample(PAIR, now + 2, ttft_s=4.0)], [])
    windows = await reader.changed_windows(known)
    assert ttfts(windows[PAIR].samples) == [4.0]
    writer_view = (await writer.changed_windows({}))[PAIR].samples
    assert ttfts(writer_view) == [4.0]
    assert reader.health().ok and writer.health().ok


async def test_redis_down_at_start_serves_own_samples_and_recovers(
    own_redis: RedisServer, stores: StoreFactory, tmp_path: object
) -> None:
    secured = RedisServer(own_redis.workdir, password="s3cret-pw")
    store = await stores(secured.url, "ttft", replica="solo")  # nothing listens yet
    health = store.health()
    assert not health.ok
    assert f"127.0.0.1:{secured.port}" in health.detail and "s3cret" not in health.detail
    now = time.time()
    mine = [sample(PAIR, now - 1), sample(PAIR, now)]
    with pytest.raises(StoreUnavailable):
        await store.append(mine, [])
    windows = await store.changed_windows({})  # does not raise: this replica's own view
    assert windows[PAIR].samples == mine
    try:
        await secured.start_async()
        await store.append(mine, [])  # the buffer's retry: same samples, no duplicates
        assert store.health().ok
        assert "s3cret" not in store.health().detail
        other = await stores(secured.url, "ttft")
        assert (await other.changed_windows({}))[PAIR].samples == mine
        assert (await store.changed_windows({}))[PAIR].samples == mine
    finally:
        secured.kill()


async def test_outage_mid_traffic_loses_nothing_and_the_buffer_catches_up(
    own_redis: RedisServer, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    await own_redis.start_async()
    store = await stores(own_redis.url, "ttft", socket_timeout_s=0.2, connect_timeout_s=0.2)
    buffer = SampleBuffer(BufferConfig(flush_interval_s=0.02), store)
    stop = asyncio.Event()
    flusher = asyncio.create_task(buffer.run(stop))
    redis = admin(own_redis.url)
    now = time.time()
    try:
        for i in range(10):
            buffer.add_sample(sample(PAIR, now - 30 + i, ttft_s=1.0))
        await wait_until(lambda: redis.zcard(window_key("ttft", PAIR)), timeout=5)
        assert (await store.changed_windows({}))[PAIR].samples[-1].ttft_s == 1.0
        own_redis.kill()
        for i in range(10):
            buffer.add_sample(sample(PAIR, now - 20 + i, ttft_s=2.0))
        await wait_until(lambda: not store.health().ok, timeout=5)
        view = (await store.changed_windows({}))[PAIR].samples
        assert ttfts(view) == [1.0] * 10 + [2.0] * 10  # last read + own, while Redis is down
        assert len(buffer) == 10
        await own_redis.start_async()  # same port, empty: no persistence
        await wait_until(lambda: len(buffer) == 0 and store.health().ok, timeout=10)
        assert await redis.zcard(window_key("ttft", PAIR)) == 10
        fresh = await stores(own_redis.url, "ttft")
        assert ttfts((await fresh.changed_windows({}))[PAIR].samples) == [2.0] * 10
    finally:
        stop.set()
        await flusher
    assert buffer.dropped_samples == 0


async def test_refused_writes_are_store_unavailable(
    own_redis: RedisServer, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    await own_redis.start_async()
    store = await stores(own_redis.url, "ttft")
    redis = admin(own_redis.url)
    await redis.config_set("maxmemory", "1")
    with pytest.raises(StoreUnavailable, match="maxmemory"):
        await store.append([sample(PAIR, time.time())], [])
    assert not store.health().ok
    await redis.config_set("maxmemory", "0")
    await store.append([sample(PAIR, time.time())], [])
    assert store.health().ok


async def test_a_lost_write_leaves_every_view_even_after_as_many_new_writes(
    shared_redis: RedisServer, prefix: str, stores: StoreFactory, admin: Callable[[str], Redis]
) -> None:
    """A failover can lose the last write a replica already read: the promoted replica holds
    the pair as it was before it. Versions grow by random steps, so the next write does not
    bring the pair back to the version that replica holds, and its next refresh replaces
    the lost sample with what Redis has."""
    writer, reader = await stores(shared_redis.url, prefix), await stores(shared_redis.url, prefix)
    redis = admin(shared_redis.url)
    keys = [window_key(prefix, PAIR), versions_key(prefix, PAIR.model)]
    now = time.time()
    await writer.append([sample(PAIR, now - 3 + i, ttft_s=1.0) for i in range(3)], [])
    known = {p: w.version for p, w in (await reader.changed_windows({})).items()}
    before = [await redis.dump(key) for key in keys]
    await writer.append([sample(PAIR, now, ttft_s=2.0)], [])  # acknowledged, then lost:
    known |= {p: w.version for p, w in (await reader.changed_windows(known)).items()}
    for key, dumped in zip(keys, before, strict=True):
        await redis.restore(key, 0, dumped, replace=True)
    await writer.append([sample(PAIR, now + 1, ttft_s=3.0)], [])  # as many writes as lost
    windows = await reader.changed_windows(known)
    assert ttfts(windows[PAIR].samples) == [1.0, 1.0, 1.0, 3.0]
