"""SampleBuffer: bounded (the oldest drop first), flushes in batches, keeps what a store
that is down refused."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.base import StoreUnavailable
from proxy.learning.store.buffer import SampleBuffer
from proxy.learning.store.memory import MemoryStore
from proxy.settings.config import BufferConfig, MemoryStoreConfig

PAIR = Pair("m", "p")


def sample(ttft_s: float, ts: float) -> Sample:
    return Sample(PAIR.model, PAIR.provider, Outcome.OK, ttft_s, ts)


class DownStore(MemoryStore):
    """A memory store whose writes fail while `down` (a store's outage, in process)."""

    down = True

    async def append(self, samples: Sequence[Sample], decisions: Sequence[dict[str, Any]]) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")
        await super().append(samples, decisions)


async def test_a_full_buffer_drops_the_oldest_and_counts_it() -> None:
    dropped: list[str] = []
    store = MemoryStore(MemoryStoreConfig())
    buffer = SampleBuffer(BufferConfig(max_items=3, batch_size=2), store)
    buffer.on_drop(dropped.append)
    now = time.time()
    for i in range(5):
        buffer.add_sample(sample(float(i), now + i))
    assert len(buffer) == 3 and buffer.dropped_samples == 2 and dropped == ["sample"] * 2
    assert await buffer.flush() == 3 and len(buffer) == 0
    window = (await store.changed_windows({}))[PAIR]
    assert [s.ttft_s for s in window.samples] == [2.0, 3.0, 4.0]


async def test_what_a_down_store_refused_is_flushed_once_it_is_back() -> None:
    store = DownStore(MemoryStoreConfig())
    buffer = SampleBuffer(BufferConfig(max_items=10), store)
    buffer.add_sample(sample(0.5, time.time()))
    with pytest.raises(StoreUnavailable):
        await buffer.flush()
    assert len(buffer) == 1 and buffer.flushed_samples == 0
    store.down = False
    assert await buffer.flush() == 1 and buffer.flushed_samples == 1
