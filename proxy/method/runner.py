"""The bench loop: rounds over every pair, measured requests, one line per sample.

Each round sends every pair that still needs requests its next one (`concurrency` of them,
1 by default: one at a time per pair), waits for all of them, then pauses `spacing_s`
(times a jitter factor) before the next round. Pairs thus advance together, round-robin,
and every pair sees the same hours; with `duration_s` the pauses stretch so that the
remaining rounds fill the remaining time. A pair's first `warmup` requests are recorded
as warm-ups and left out of the report. Each request is written to the samples file as
soon as it ends, so a resumed run counts what is there and sends only what is missing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from proxy.core.domain import Source
from proxy.method.plan import CHAT_PATH, Method, Pacing, PairSpec
from proxy.method.samplefile import Phase, Record, SampleWriter
from proxy.upstream.base import Upstream
from proxy.upstream.measure import estimate_prompt_tokens, measure_stream


class Progress(Protocol):
    def add(self, record: Record) -> None:
        """A request ended (also called for records already in the file, on resume)."""
        ...

    def round_done(self, rounds_left: int) -> None: ...


@dataclass(slots=True)
class Cursor:
    """Where one pair stands: requests made per phase and the next index of each."""

    spec: PairSpec
    method: Method
    made: dict[Phase, int] = field(default_factory=lambda: {"warmup": 0, "counted": 0})
    next_index: dict[Phase, int] = field(default_factory=lambda: {"warmup": 0, "counted": 0})

    @property
    def remaining(self) -> int:
        return self.method.warmup + self.method.counted_per_pair - sum(self.made.values())

    def batch(self) -> int:
        """How many requests this pair sends in the next round: up to `concurrency`, and
        never warm-ups and counted ones together (counted requests come after warm-up)."""
        warmups_left = self.method.warmup - self.made["warmup"]
        return min(self.method.concurrency, warmups_left or self.remaining)

    @property
    def rounds_left(self) -> int:
        c = self.method.concurrency
        warmups_left = self.method.warmup - self.made["warmup"]
        return -(-warmups_left // c) + -(-(self.remaining - warmups_left) // c)

    def note(self, record: Record) -> None:
        self.made[record.phase] += 1
        self.next_index[record.phase] = max(self.next_index[record.phase], record.index + 1)

    def take(self) -> tuple[Phase, int]:
        """Reserve the pair's next request: its phase and index."""
        phase: Phase = "warmup" if self.made["warmup"] < self.method.warmup else "counted"
        index = self.next_index[phase]
        self.made[phase] += 1
        self.next_index[phase] = index + 1
        return phase, index


@dataclass(frozen=True, slots=True)
class Run:
    """A bench run ready to go: what to send, where, and where each sample goes."""

    method: Method
    pacing: Pacing
    started: float  # wall clock of the run's first start (its header), for `duration_s`
    upstreams: Mapping[str, Upstream]
    first_token_s: Mapping[str, float]
    writer: SampleWriter
    replica: str = "bench"


def cursors_for(method: Method, done: Sequence[Record]) -> list[Cursor]:
    cursors = {spec.pair: Cursor(spec, method) for spec in method.pairs}
    for record in done:
        cursors[record.sample.pair].note(record)
    return list(cursors.values())


async def run_bench(
    run: Run, done: Sequence[Record], progress: Progress, rng: random.Random | None = None
) -> None:
    """Send every request the samples file is still missing. Returns when all are in."""
    rng = rng or random.Random()
    cursors = cursors_for(run.method, done)
    rounds_left = max(c.rounds_left for c in cursors)
    end_at = run.started + run.pacing.duration_s if run.pacing.duration_s else None
    while rounds_left > 0:
        async with asyncio.TaskGroup() as group:
            for cursor in cursors:
                for _ in range(cursor.batch()):
                    phase, index = cursor.take()
                    group.create_task(_request(run, cursor.spec, phase, index, progress))
        rounds_left -= 1
        progress.round_done(rounds_left)
        if rounds_left:
            await asyncio.sleep(_pause_s(run.pacing, end_at, rounds_left, rng))


def _pause_s(pacing: Pacing, end_at: float | None, rounds_left: int, rng: random.Random) -> float:
    """The pause before the next round: the spacing, or a share of the time left."""
    base = pacing.spacing_s
    if end_at is not None:
        base = max(base, (end_at - time.time()) / rounds_left)
    return max(0.0, base * rng.uniform(1 - pacing.jitter, 1 + pacing.jitter))


async def _request(run: Run, spec: PairSpec, phase: Phase, index: int, progress: Progress) -> None:
    body = run.method.body(spec, phase, index)
    clock, outcome, error = await measure_stream(
        run.upstreams[spec.provider], CHAT_PATH, body, run.first_token_s[spec.provider]
    )
    size = run.method.size_of(index)  # a padded prompt's nominal size, else the estimate
    sample = clock.sample(
        spec.model, spec.provider, outcome, source=Source.BENCH,
        prompt_tokens=size if size is not None else estimate_prompt_tokens(len(body)),
        replica=run.replica,
    )  # fmt: skip
    record = Record(sample, phase, index, error)
    run.writer.append(record)
    progress.add(record)
