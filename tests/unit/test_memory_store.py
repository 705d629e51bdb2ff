"""MemoryStore: the store contract of tests/store/test_redis_store.py in one process: windows
trimmed by count and by age, versions that move only with their pair, a capped decision log."""

from __future__ import annotations

import time

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.memory import MemoryStore
from proxy.settings.config import MemoryStoreConfig

PAIR = Pair("model-a", "provider-1")
OTHER = Pair("model-a", "provider-2")


def sample(pair: Pair, ts: float, ttft_s: float = 0.25) -> Sample:
    return Sample(pair.model, pair.provider, Outcome.OK, ttft_s, ts)


async def test_window_is_trimmed_by_count_and_age_and_versioned() -> None:
    store = MemoryStore(MemoryStoreConfig(max_samples=5, max_age_s=60))
    now = time.time()
    too_old = [sample(PAIR, now - 120 + i, ttft_s=9.0) for i in range(3)]
    recent = [sample(PAIR, now - 10 + i, ttft_s=float(i)) for i in range(8)]
    await store.append(too_old + recent[:4], [])
    await store.append(recent[4:], [])
    windows = await store.changed_windows({})
    assert list(windows) == [PAIR]
    assert windows[PAIR].samples == recent[3:]  # newest 5, oldest first

    known = {PAIR: windows[PAIR].version}
    assert await store.changed_windows(known) == {}
    await store.append([sample(OTHER, now)], [])
    assert list(await store.changed_windows(known)) == [OTHER]  # only the pair that moved


async def test_a_window_handed_out_is_not_changed_by_later_samples() -> None:
    store = MemoryStore(MemoryStoreConfig(max_samples=2))
    now = time.time()
    await store.append([sample(PAIR, now - 2), sample(PAIR, now - 1)], [])
    first = (await store.changed_windows({}))[PAIR]
    await store.append([sample(PAIR, now)], [])
    second = (await store.changed_windows({}))[PAIR]
    assert [s.timestamp for s in first.samples] == [now - 2, now - 1]
    assert [s.timestamp for s in second.samples] == [now - 1, now]
    assert second.version != first.version


async def test_the_decision_log_is_capped_and_read_newest_first() -> None:
    store = MemoryStore(MemoryStoreConfig(max_decisions=4))
    decisions = [{"id": f"d{i}", "model": "model-a" if i % 2 else "model-b"} for i in range(7)]
    await store.append([], decisions[:3])
    await store.append([], decisions[3:])
    assert [d["id"] for d in await store.recent_decisions(None, 10)] == ["d6", "d5", "d4", "d3"]
    assert [d["id"] for d in await store.recent_decisions(None, 2)] == ["d6", "d5"]
    assert [d["id"] for d in await store.recent_decisions("model-a", 10)] == ["d5", "d3"]
