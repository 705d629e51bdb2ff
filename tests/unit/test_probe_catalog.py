"""The probe budget in a large catalog (500 models x 4 providers): the prober's planning,
priority and budget driven on a simulated clock (benchmarks/probe_catalog.py; nothing is
sent, nothing is random: the same run every time)."""

from __future__ import annotations

import bisect
import itertools

from benchmarks.probe_catalog import START, Result, simulate
from proxy.probing.prober import HOUR_S
from proxy.settings.config import ProberConfig

DEFAULTS = ProberConfig()


def most_in_an_hour(times: list[float]) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + HOUR_S) - i for i, t in enumerate(times)), default=0)


def gaps_after(r: Result, warm_s: float) -> list[float]:
    """Seconds between consecutive probes of the used models' probed pairs, after warm_s."""
    out = []
    for sp in r.pairs:
        if sp.used and not sp.routed:
            times = [t for t in sp.probes if t >= START + warm_s]
            out += [b - a for a, b in itertools.pairwise(times)]
    return out


async def test_a_few_used_models_keep_their_schedule_and_the_catalog_gets_the_rest() -> None:
    r = await simulate(models=500, providers=4, used=4, hours=3.0)
    every = [sp.probes for sp in r.pairs]
    assert most_in_an_hour([t for ts in every for t in ts]) <= DEFAULTS.max_probes_per_hour
    # the used models' non-routed pairs: probed at every gap slot (<= 1.2 x 120 s + a tick)
    assert r.used_max_gap_s <= r.used_gap_bound_s == 145.0
    assert r.used_pairs_probed == 16
    # the unused: probed, at most once per (stretched) unused interval, within their share
    unused = [t for sp in r.pairs if not sp.used for t in sp.probes]
    assert r.unused_probes > 300
    assert r.unused_min_slot_repeat == 1
    assert r.unused_interval_s >= DEFAULTS.unused_interval_s
    assert most_in_an_hour(unused) <= DEFAULTS.max_probes_per_hour * DEFAULTS.unused_share


async def test_twenty_used_models_more_than_the_budget_holds_are_paced_not_starved() -> None:
    """60 pairs wanting a gap probe every 120 s (1,800 an hour) against 450 an hour: each is
    probed about every 540 s (stretched 4.5 x), none goes unmeasured for half an hour, and
    the unused models still get their share."""
    r = await simulate(models=500, providers=4, used=20, hours=3.0)
    every = [t for sp in r.pairs for t in sp.probes]
    assert most_in_an_hour(every) <= DEFAULTS.max_probes_per_hour
    assert r.used_max_gap_s < 1800.0  # the pace settling in at the start included
    assert max(gaps_after(r, 2 * HOUR_S)) <= r.used_gap_bound_s  # then: the stretched slots
    assert r.used_probes > 2 * r.unused_probes > 0
    assert r.unused_min_slot_repeat == 1
