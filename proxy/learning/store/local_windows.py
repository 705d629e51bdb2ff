"""This replica's view of every pair's window, as the shared store hands it to the scoreboard.

The view is what Redis last returned for each pair, merged with the samples this replica
appended since: while Redis is reachable the remote windows overwrite it, while it is not
the view keeps learning from this replica's own traffic. Every change gives the pair a new
version from one counter, so versions never repeat even when Redis's go back (FLUSHALL).
Lists handed out are never mutated afterwards. Pure: no I/O, no clock but `time.time()`.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping

from proxy.core.domain import SAMPLE_TIME, Pair, Sample
from proxy.learning.store.base import Window


class LocalWindows:
    def __init__(self, max_samples: int, max_age_s: float) -> None:
        self._max_samples = max_samples
        self._max_age_s = max_age_s
        self._samples: dict[Pair, list[Sample]] = {}
        self._versions: dict[Pair, int] = {}
        self._clock = 0

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self, pair: Pair) -> list[Sample]:
        return self._samples.get(pair, [])

    def add(self, samples: Iterable[Sample]) -> None:
        """Merge this replica's own samples in; one seen before (a retried batch) is skipped."""
        by_pair: dict[Pair, list[Sample]] = {}
        for sample in samples:
            by_pair.setdefault(sample.pair, []).append(sample)
        for pair, new in by_pair.items():
            old = self._samples.get(pair, [])
            newest = old[-1].timestamp if old else -math.inf
            fresh = [s for s in new if s.timestamp > newest or not _contains(old, s)]
            if not fresh:
                continue
            fresh.sort(key=SAMPLE_TIME)
            if fresh[0].timestamp >= newest:  # the usual case: all newer than the window
                self._set(pair, old + fresh)
            else:
                self._set(pair, sorted(old + fresh, key=SAMPLE_TIME))

    def replace(self, pair: Pair, samples: list[Sample]) -> None:
        """The whole remote window (oldest first) replaces the pair's view."""
        self._set(pair, samples)

    def replace_tail(self, pair: Pair, bound: float, tail: list[Sample]) -> None:
        """The remote samples timestamped >= `bound` (oldest first) replace the view's."""
        old = self._samples.get(pair, [])
        self._set(pair, old[: bisect_left(old, bound, key=SAMPLE_TIME)] + tail)

    def changed(self, known: Mapping[Pair, int]) -> dict[Pair, Window]:
        return {
            pair: Window(version, self._samples[pair])
            for pair, version in self._versions.items()
            if known.get(pair) != version
        }

    def _set(self, pair: Pair, samples: list[Sample]) -> None:
        cutoff = time.time() - self._max_age_s
        start = max(len(samples) - self._max_samples, bisect_left(samples, cutoff, key=SAMPLE_TIME))
        self._samples[pair] = samples[max(start, 0) :]
        self._clock += 1
        self._versions[pair] = self._clock


def _contains(window: list[Sample], sample: Sample) -> bool:
    i = bisect_left(window, sample.timestamp, key=SAMPLE_TIME)
    while i < len(window) and window[i].timestamp == sample.timestamp:
        if window[i] == sample:
            return True
        i += 1
    return False
