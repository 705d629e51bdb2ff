"""A primary killed under a steady writer: what the writer had acknowledged, what the new
primary holds, and that every reader ends up with exactly that. Shared by the Cluster and
Sentinel tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.base import StoreUnavailable
from proxy.learning.store.redis_schema import pack_sample
from proxy.learning.store.redis_store import RedisStore
from tests.helpers import wait_until


@dataclass
class Writer:
    """Appends a batch every few ms as a replica's flusher would; a refused batch is kept
    and sent again. Remembers when each sample was acknowledged."""

    store: RedisStore
    pairs: list[Pair]
    acked: dict[Sample, float] = field(default_factory=dict)
    refused: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        pending: list[Sample] = []
        step = 0
        while not self.stop.is_set():
            step += 1
            now = time.time()
            pending += [Sample(p.model, p.provider, Outcome.OK, 0.001 * step, round(now, 6))
                        for p in self.pairs[step % 3 :: 3]]  # fmt: skip
            try:
                await self.store.append(pending, [])
            except StoreUnavailable:
                self.refused += 1
            else:
                self.acked |= dict.fromkeys(pending, time.monotonic())
                pending = []
            await asyncio.sleep(0.01)
        while pending:  # what the last refusal kept: a shutdown's drain
            with contextlib.suppress(StoreUnavailable):
                await self.store.append(pending, [])
                self.acked |= dict.fromkeys(pending, time.monotonic())
                pending = []


async def kill_under_writes(
    writer: Writer, reader: RedisStore, kill: Callable[[], None],
    recovered: Callable[[], Awaitable[object]],
) -> float:  # fmt: skip
    """Run `writer`; once it has written, let `reader` read, `kill()`, wait until writes are
    refused, `recovered()`, and until the writer is acknowledged again. Returns the kill's
    monotonic time."""
    task = asyncio.create_task(writer.run())
    try:
        await wait_until(lambda: len(writer.acked) >= 200, timeout=10)
        await reader.changed_windows({})  # a reader that read before the kill
        kill()
        killed_at = time.monotonic()
        await wait_until(lambda: writer.refused > 0, timeout=10)
        await recovered()
        acked_at_recovery = len(writer.acked)
        await wait_until(lambda: len(writer.acked) >= acked_at_recovery + 100, timeout=20)
    finally:
        writer.stop.set()
        await task
    return killed_at


def lost(writer: Writer, held: dict[Pair, list[bytes]], killed_at: float, what: str) -> int:
    """Acknowledged samples the store no longer holds; each was acknowledged before the kill
    (a write the dead primary had not replicated yet). Prints the figures."""
    in_store = {(p, m) for p, members in held.items() for m in members}
    gone = [s for s in writer.acked if (s.pair, pack_sample(s)) not in in_store]
    print(f"\n{what}: {len(writer.acked)} samples acknowledged, {len(gone)} lost (acknowledged "
          f"by the dead primary before it replicated them), {writer.refused} batches refused "
          f"and sent again")  # fmt: skip
    assert all(writer.acked[s] <= killed_at for s in gone)
    return len(gone)


async def readers_agree(readers: list[RedisStore], held: dict[Pair, list[bytes]]) -> None:
    """Each reader's next refresh holds exactly what the store holds."""
    for reader in readers:
        view = await reader.changed_windows({})
        assert {p: len(w.samples) for p, w in view.items()} == {p: len(m) for p, m in held.items()}
