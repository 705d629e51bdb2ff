"""The in-memory scoreboard routing reads: store -> stats -> one immutable snapshot.

A background loop asks the store for windows whose version changed since the last refresh
and recomputes only those pairs' scores, plus, in turn, a slice of the models, so that every
model is rescored at least once per `full_every_s` (samples age out of a window, and evidence
ages, with no new traffic); a policy change recomputes every pair. A pair's Belief (the
posterior of its objective, stats.score_model) depends on the model's other pairs (the
pooled prior) and on the clock (evidence ages), so a pair is always rescored with its whole
model. Each pair's change detector (learning.change) is fed its new samples once. The
snapshot is swapped whole: a reader never sees a half-updated board and never awaits; a
refresh of many pairs yields to the event loop between batches.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from proxy.core.domain import SAMPLE_TIME, Change, Pair, Sample, Score, Source
from proxy.core.loops import pause
from proxy.learning import stats
from proxy.learning.change import LATE_S, Detector
from proxy.learning.coldness import cold_model
from proxy.learning.stats import score_model
from proxy.learning.store.base import Store, StoreUnavailable
from proxy.settings.policy import PolicyHolder, WindowParams

log = logging.getLogger("ttft_router.scoreboard")
# Pairs scored between yields to the event loop (~200-400 us each with their posterior): a
# refresh of many pairs must not stall the requests in flight for its whole duration.
SCORE_BATCH = 30


class Scoreboard:
    def __init__(
        self,
        store: Store,
        policies: PolicyHolder,
        *,
        refresh_s: float = 1.0,
        full_every_s: float = 15.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        pairs: Collection[Pair] | None = None,
    ) -> None:
        """`rng` seeds each refresh's posterior draws (a seeded one replays a run); `clock`
        is the wall clock the evidence ages by (a test's synthetic one replays it too).
        `pairs`: the configured pairs; windows of any other pair the store holds (anyone
        who can write under the prefix can add one) are ignored: no score, no metric label,
        no routing. None: every pair (tests of the scoreboard alone)."""
        self._clock = clock
        self._store = store
        self._pairs = frozenset(pairs) if pairs is not None else None
        self._policies = policies
        self.refresh_s = refresh_s
        self._full_every_s = full_every_s
        self._versions: dict[Pair, int] = {}
        self._windows: dict[Pair, list[Sample]] = {}
        self.snapshot: Mapping[Pair, Score] = MappingProxyType({})
        self.refreshed_at: float | None = None
        self.last_error: str | None = None
        self.last_refresh_cpu_s = 0.0
        self._turns: deque[str] = deque()  # models in the order they are rescored for ageing
        self._policy_seen = policies.current
        self._seeds = rng or random.Random()
        self._detectors: dict[Pair, Detector] = {}

    def window(self, pair: Pair) -> Sequence[Sample]:
        """The samples last read of `pair`, oldest first (empty when none); read-only."""
        return self._windows.get(pair, ())

    def age_s(self, now: float | None = None) -> float | None:
        """Seconds since the last successful refresh; None before the first one."""
        if self.refreshed_at is None:
            return None
        return (now if now is not None else self._clock()) - self.refreshed_at

    def window_samples(self, pair: Pair) -> list[Sample]:
        """The pair's samples as last read from the store, oldest first (may hold samples
        older than the policy's window: `stats.in_window` cuts them as scoring does)."""
        return self._windows.get(pair, [])

    async def refresh(self) -> int:
        """Pull changed windows and rescore them. Returns the number of pairs rescored.
        Raises StoreUnavailable (the snapshot stays as it was)."""
        changed = await self._store.changed_windows(self._versions)
        if self._pairs is not None:
            changed = {pair: w for pair, w in changed.items() if pair in self._pairs}
        cpu = time.process_time()
        now = self._clock()
        for pair, window in changed.items():
            self._versions[pair] = window.version
            self._windows[pair] = window.samples
        if self._policies.current is not self._policy_seen:
            self._policy_seen = self._policies.current
            pairs = list(self._windows)
        else:  # every posterior ages, whether a sample came or left or not: a slice a time
            pairs = [*changed, *self._ageing_slice()]
        cpu = time.process_time() - cpu
        if pairs:
            board = dict(self.snapshot)
            by_model: dict[str, dict[Pair, list[Sample]]] = {}
            for pair, samples in self._windows.items():
                by_model.setdefault(pair.model, {})[pair] = samples
            models = list(dict.fromkeys(p.model for p in pairs))
            done = 0
            for model in models:
                if done >= SCORE_BATCH:
                    await asyncio.sleep(0)  # let requests run between batches
                    done = 0
                batch_cpu = time.process_time()
                params = self._policies.current.for_model(model).window_params()
                seed = self._seeds.getrandbits(64)
                changes = self._changes(by_model[model], params)
                scored = score_model(by_model[model], params, now, seed, changes)
                board.update(with_cold_models(scored, by_model[model], params, now))
                done += len(by_model[model])
                cpu += time.process_time() - batch_cpu
            self.snapshot = MappingProxyType(board)
            pairs = list(dict.fromkeys(p for m in models for p in by_model[m]))
        self.refreshed_at = now
        self.last_refresh_cpu_s = cpu
        return len(pairs)

    def _ageing_slice(self) -> list[Pair]:
        """The pairs of the next models in turn, so that every model is rescored at least
        once per `full_every_s` without one refresh rescoring them all (at 2,000 pairs a
        whole pass costs seconds of CPU: spread, each refresh costs a share of it)."""
        models = list(dict.fromkeys(p.model for p in self._windows))
        if not models:
            return []
        if set(self._turns) != set(models):
            self._turns = deque(models)
        share = self.refresh_s / self._full_every_s if self._full_every_s > 0 else 1.0
        count = max(1, math.ceil(len(models) * share))
        chosen = set()
        for _ in range(min(count, len(self._turns))):
            chosen.add(self._turns[0])
            self._turns.rotate(-1)
        return [p for p in self._windows if p.model in chosen]

    def _changes(
        self, windows: Mapping[Pair, Sequence[Sample]], params: WindowParams
    ) -> dict[Pair, Change | None] | None:
        """Each pair's newest change: its online detector (learning.change) fed the samples
        it has not seen yet; a new detector when the policy's change parameters move."""
        if params.change is None:
            return None
        out: dict[Pair, Change | None] = {}
        for pair, samples in windows.items():
            detector = self._detectors.get(pair)
            if detector is None or detector.params != params.change:
                detector = self._detectors[pair] = Detector(params.change)
            # the detector skips what it has read: a late sample (one that started earlier
            # and took longer) is still read, when it arrives
            start = bisect.bisect_left(samples, detector.last_ts - LATE_S, key=SAMPLE_TIME)
            out[pair] = detector.feed(samples[start:], self._slope(pair, params))
        return out

    def _slope(self, pair: Pair, params: WindowParams) -> float:
        """The pair's prefill slope (s per prompt token) as last fitted, else the prior's."""
        score = self.snapshot.get(pair)
        fitted = score.prefill if score is not None else None
        return (
            fitted.s_per_token
            if fitted is not None and fitted.identified
            else (params.prefill_s_per_token)
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
                if self.last_error is not None:
                    log.info("scoreboard refresh recovered")
                self.last_error = None
            except StoreUnavailable as exc:
                if self.last_error is None:
                    log.warning("scoreboard refresh failed, routing on the last scores: %s", exc)
                self.last_error = str(exc)
            self._policies.reload_if_changed()  # logs itself; keeps the last good policy
            await pause(stop, self.refresh_s)


def with_cold_models(
    scores: dict[Pair, Score], windows: Mapping[Pair, Sequence[Sample]], params: WindowParams,
    now: float,
) -> dict[Pair, Score]:  # fmt: skip
    """`scores` with each pair's ColdModel (proxy.learning.coldness) from its window."""
    for pair, score in scores.items():
        recent = [  # a client's own placements (steered) do not teach the coldness model
            s for s in stats.in_window(windows.get(pair, ()), params, now)
            if s.source is not Source.STEERED
        ]  # fmt: skip
        cold = cold_model(recent, params.cold_factor, params.cold_floor_s)
        if cold is not None:
            scores[pair] = replace(score, cold=cold)
    return scores
