"""Three `ttft-router serve` replicas under steady traffic through the openai SDK while the
Redis primary they write to is killed (`kill -9`): no client request fails, routing goes on
from each replica's view, writes resume on the promoted replica, and once the buffers are
flushed every replica's scores equal what Redis holds. Shared by the Cluster and Sentinel
end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.test_replicas import MODELS, Replica, ask, market, replicas, write_config
from tests.helpers import wait_until

Counts = dict[tuple[str, str], int]


@dataclass
class Traffic:
    """Two workers per replica, each sending one request after the other."""

    fleet: list[Replica]
    served: int = 0
    failures: list[BaseException] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, replica: Replica, model: str) -> None:
        while not self.stop.is_set():
            try:
                await ask(replica, model)
                self.served += 1
            except Exception as exc:  # any failure at all is what these tests look for
                self.failures.append(exc)

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.worker(replica, model))
                for replica in self.fleet for model in MODELS]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    served: int
    served_during_failover: int
    stored: int
    agreement_s: float


async def failover_under_traffic(
    tmp_path: Path, url: str, kill: Callable[[], None],
    recovered: Callable[[], Awaitable[object]], stored: Callable[[], Counts],
) -> Outcome:  # fmt: skip
    """`kill()` the primary mid-traffic, wait for `recovered()`, then for agreement.
    `stored()` (blocking) counts the samples Redis holds per (model, provider)."""
    async with market() as sim:
        configs = [write_config(tmp_path, sim, url, f"r{i}") for i in range(3)]
        async with replicas(*configs) as fleet:
            traffic = Traffic(fleet)
            workers = traffic.start()
            try:
                await wait_until(lambda: _stored_at_least(stored, 20), timeout=20)
                kill()
                at_kill = traffic.served
                await recovered()
                during = traffic.served - at_kill
                await wait_until(lambda: traffic.served >= at_kill + during + 20, timeout=20)
            finally:
                traffic.stop.set()
                await asyncio.gather(*workers)
            await wait_until(lambda: _flushed(fleet), timeout=15)
            started = time.monotonic()
            counts = await wait_until(lambda: _agreed(fleet, stored), timeout=10)
            agreement_s = time.monotonic() - started
            assert [await _dropped(r) for r in fleet] == [0, 0, 0]
    assert traffic.failures == [], traffic.failures[:3]
    for replica in fleet:
        assert replica.unexpected_log_lines() == []
    return Outcome(traffic.served, during, sum(counts.values()), agreement_s)


async def _stored_at_least(stored: Callable[[], Counts], count: int) -> bool:
    return sum((await asyncio.to_thread(stored)).values()) >= count


async def _flushed(fleet: list[Replica]) -> bool:
    statuses = [(await r.admin("/admin/status"))["store"] for r in fleet]
    return all(s["ok"] and s["buffered_samples"] == 0 for s in statuses)


async def _agreed(fleet: list[Replica], stored: Callable[[], Counts]) -> Counts | None:
    """What Redis holds, once every replica's scores count exactly that."""
    held = await asyncio.to_thread(stored)
    views = [await r.attempts() for r in fleet]
    return held if all(view == held for view in views) else None


async def _dropped(replica: Replica) -> int:
    dropped: int = (await replica.admin("/admin/status"))["store"]["dropped_samples"]
    return dropped
