"""LocalWindows: a replica's view of the shared windows (pure, no Redis)."""

from __future__ import annotations

import time

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.local_windows import LocalWindows

PAIR = Pair("m", "p")


def sample(ts: float, ttft_s: float = 0.1, pair: Pair = PAIR) -> Sample:
    return Sample(pair.model, pair.provider, Outcome.OK, ttft_s, ts)


def test_own_samples_merge_in_order_once_and_get_new_versions() -> None:
    view = LocalWindows(max_samples=10, max_age_s=3600)
    now = time.time()
    first = [sample(now - 3), sample(now - 1)]
    view.add(first)
    v1 = view.changed({})[PAIR].version
    view.add(first)  # a retried batch: nothing new
    assert view.changed({PAIR: v1}) == {}
    view.add([sample(now - 2, ttft_s=0.2), sample(now, pair=Pair("m", "q"))])
    changed = view.changed({PAIR: v1})
    assert [s.timestamp for s in changed[PAIR].samples] == [now - 3, now - 2, now - 1]
    assert (
        len({w.version for w in changed.values()}) == 2
        and min(w.version for w in changed.values()) > v1
    )


def test_a_remote_tail_replaces_the_view_from_its_bound() -> None:
    view = LocalWindows(max_samples=10, max_age_s=3600)
    now = time.time()
    view.add([sample(now - 30), sample(now - 5, ttft_s=9.0)])  # the second: own, not in Redis
    handed_out = view.samples(PAIR)
    view.replace_tail(PAIR, now - 10, [sample(now - 8, ttft_s=0.3), sample(now - 2, 0.4)])
    assert [s.ttft_s for s in view.samples(PAIR)] == [0.1, 0.3, 0.4]
    assert [s.ttft_s for s in handed_out] == [0.1, 9.0]  # lists handed out never change


def test_windows_are_trimmed_by_count_and_age() -> None:
    view = LocalWindows(max_samples=3, max_age_s=60)
    now = time.time()
    view.replace(PAIR, [sample(now - 100)] + [sample(now - 10 + i, ttft_s=i) for i in range(5)])
    assert [s.ttft_s for s in view.samples(PAIR)] == [2, 3, 4]
    view.replace(PAIR, [sample(now - 100), sample(now - 1)])
    assert [s.timestamp for s in view.samples(PAIR)] == [now - 1]
