"""The bounded local buffer between the request path and the store, and its flusher.

`add_sample` / `add_decision` are O(1), never await and never block: when the buffer is
full the oldest item is dropped and counted (admin, metrics, one log line per burst). The
flusher sends batches to the store in the background; when the store is unavailable it
keeps the batch (still bounded) and retries with backoff, so an outage loses nothing
unless it outlasts the buffer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from proxy.core.domain import Decision, Sample
from proxy.core.loops import pause
from proxy.learning.store.base import Store, StoreUnavailable
from proxy.settings.config import BufferConfig

log = logging.getLogger("ttft_router.buffer")


class SampleBuffer:
    def __init__(self, config: BufferConfig, store: Store) -> None:
        self._config = config
        self._store = store
        self._samples: deque[Sample] = deque()
        self._decisions: deque[Decision] = deque()
        self.dropped_samples = 0
        self.dropped_decisions = 0
        self.flushed_samples = 0
        self.last_error: str | None = None
        self._on_drop: Callable[[str], None] | None = None

    def on_drop(self, callback: Callable[[str], None]) -> None:
        """Called with "sample" or "decision" for every item dropped (metrics hook)."""
        self._on_drop = callback

    def __len__(self) -> int:
        return len(self._samples)

    def add_sample(self, sample: Sample) -> None:
        if len(self._samples) >= self._config.max_items:
            self._samples.popleft()
            self._dropped("sample")
        self._samples.append(sample)

    def add_decision(self, decision: Decision) -> None:
        if len(self._decisions) >= self._config.max_items:
            self._decisions.popleft()
            self._dropped("decision")
        self._decisions.append(decision)

    def _dropped(self, what: str) -> None:
        if what == "sample":
            self.dropped_samples += 1
            count = self.dropped_samples
        else:
            self.dropped_decisions += 1
            count = self.dropped_decisions
        if count == 1 or count % 1000 == 0:
            log.warning("buffer full: dropped the oldest %s (%d dropped so far)", what, count)
        if self._on_drop is not None:
            self._on_drop(what)

    def _put_back(self, queue: deque[Any], items: list[Any], what: str) -> None:
        """Return an unsent batch to the front; what overflows is the oldest, dropped."""
        queue.extendleft(reversed(items))
        while len(queue) > self._config.max_items:
            queue.popleft()
            self._dropped(what)

    async def flush(self) -> int:
        """Send everything buffered, in batches. Returns how many samples were written.
        Raises StoreUnavailable, leaving unsent items at the front of the buffer."""
        written = 0
        while self._samples or self._decisions:
            samples = _take(self._samples, self._config.batch_size)
            decisions = _take(self._decisions, self._config.batch_size)
            # one `now` for the batch: decisions of one steady ranking render its candidates
            # once (routing.Ranking.candidates)
            now = time.time()
            rendered = [d.to_dict(now) for d in decisions]
            try:
                await self._store.append(samples, rendered)
            except StoreUnavailable:
                self._put_back(self._samples, samples, "sample")
                self._put_back(self._decisions, decisions, "decision")
                raise
            written += len(samples)
            self.flushed_samples += len(samples)
        return written

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every `flush_interval_s` until `stop`; then one last bounded drain."""
        backoff = self._config.flush_interval_s
        while not stop.is_set():
            await pause(stop, backoff)
            try:
                await self.flush()
            except StoreUnavailable as exc:
                if self.last_error is None:
                    log.warning("store unavailable, buffering samples locally: %s", exc)
                self.last_error = str(exc)
                backoff = min(backoff * 2, 2.0)
                continue
            if self.last_error is not None:
                log.info("store reachable again: buffered samples flushed")
            self.last_error = None
            backoff = self._config.flush_interval_s

    async def drain(self, timeout_s: float) -> None:
        """Shutdown: try to flush what is left within `timeout_s`, say what was lost."""
        try:
            await asyncio.wait_for(self.flush(), timeout=timeout_s)
        except (TimeoutError, StoreUnavailable) as exc:
            log.error(
                "shutdown: %d samples and %d decisions not written to the store (%s)",
                len(self._samples),
                len(self._decisions),
                exc or "timed out",
            )


def _take(queue: deque[Any], limit: int) -> list[Any]:
    count = min(limit, len(queue))
    return [queue.popleft() for _ in range(count)]
