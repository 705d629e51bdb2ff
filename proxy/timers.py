"""Coarse timers for the request path: no event-loop timer per request.

Each streamed request needs two timers that almost never fire: its first-token deadline
and the start of its disconnect watcher. As event-loop timers they cost ~4 us
(`loop.call_later` + cancel, uvloop) and ~8.5 us (`asyncio.timeout`, Python 3.11) per
request: moving them here saved ~4% of the proxy's CPU per streamed request in throughput
mode (benchmarks/overhead.py --throughput; docs/performance.md). Neither needs precision finer
than a few tens of milliseconds, so here a timer is an entry in a bucket of
`resolution_s`: arming it is a set insertion, cancelling it a set removal, and one task,
alive only while timers are armed, fires the buckets that came due.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger("ttft_router.timers")

RESOLUTION_S = 0.02


class CoarseTimer:
    __slots__ = ("_args", "_bucket", "_callback", "_owner")

    def __init__(
        self, owner: CoarseTimers, bucket: int, callback: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        self._owner = owner
        self._bucket = bucket
        self._callback = callback
        self._args = args

    def cancel(self) -> None:
        """Idempotent; a timer that already fired is left alone."""
        buckets = self._owner._buckets
        entries = buckets.get(self._bucket)
        if entries is not None:
            entries.discard(self)
            if not entries:
                del buckets[self._bucket]


class CoarseTimers:
    """`call_later` that fires no earlier than asked and at most about two
    `resolution_s` late (later only if the event loop itself is stalled)."""

    def __init__(self, resolution_s: float = RESOLUTION_S) -> None:
        self._resolution = resolution_s
        self._buckets: dict[int, set[CoarseTimer]] = {}
        self._next = 0  # the first bucket not fired yet
        self._task: asyncio.Task[None] | None = None

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> CoarseTimer:
        bucket = max(math.ceil((time.monotonic() + delay) / self._resolution), self._next)
        timer = CoarseTimer(self, bucket, callback, args)
        entries = self._buckets.get(bucket)
        if entries is None:
            self._buckets[bucket] = {timer}
        else:
            entries.add(timer)
        if self._task is None:
            self._next = min(bucket, math.floor(time.monotonic() / self._resolution))
            self._task = asyncio.get_running_loop().create_task(self._run(), name="timers")
        return timer

    async def _run(self) -> None:
        try:
            while self._buckets:
                await asyncio.sleep(self._resolution)
                self.fire_due(time.monotonic())
        finally:
            self._task = None

    def fire_due(self, now: float) -> None:
        """Run the callbacks of every bucket that has come due by `now` (monotonic)."""
        last = math.floor(now / self._resolution)
        buckets = self._buckets
        for bucket in range(self._next, last + 1):
            entries = buckets.pop(bucket, None)
            for timer in entries or ():
                try:
                    timer._callback(*timer._args)
                except Exception:
                    log.exception("timer callback %r failed", timer._callback)
        self._next = max(self._next, last + 1)

    async def close(self) -> None:
        """Stop the firing task (at shutdown); armed timers never fire."""
        self._buckets.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Deadline:
    """`asyncio.timeout(delay)`'s contract on a coarse timer, as a plain `with` block.

    When the deadline passes while the task is suspended inside the block, the task is
    cancelled and the block ends in TimeoutError, unless someone else cancelled the task
    too (then the CancelledError goes on), exactly as asyncio.timeout decides it.
    """

    __slots__ = ("_cancelling", "_task", "_timer", "expired")

    def __init__(self, timers: CoarseTimers, delay: float) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self._timer = timers.call_later(delay, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        if (
            self.expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
