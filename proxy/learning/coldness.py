"""Cold-start awareness: how a pair's idle time predicts a cold-start-like sample.

Pure, no clock of its own. From a pair's window (its samples, oldest first) the scoreboard
makes a ColdModel at each rescore: the idle-to-cold (scale-down) time that the prober's
keep-warm also uses (`learn_idle_to_cold`, one implementation), the chance of a
cold start after an idle at least that long and after a shorter one, and the typical TTFT
of a cold start. Routing's `expected` objective and hedging read it through the Score.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from proxy.core.domain import ColdModel, Sample


def cold_model(
    window: Sequence[Sample], cold_factor: float, cold_floor_s: float
) -> ColdModel | None:
    """The pair's ColdModel, or None with fewer than 3 first tokens in `window`.

    After an idle of at least the learned idle-to-cold time every gap seen was cold (that is
    how it is learned); the chance is the rule of succession, (k + 1) / (k + 2) for k such
    gaps, so one cold start after a long idle gives 67%, four give 83%. Below it (or when
    nothing is learned) the chance is the share of cold starts among the other gaps, the
    rate at which the pair goes cold by chance."""
    ttfts = [s.ttft_s for s in window if s.ttft_s is not None]
    if len(ttfts) < 3:
        return None
    gaps = idle_gaps(window, cold_factor, cold_floor_s)
    learned = idle_to_cold(gaps)
    threshold = max(cold_factor * statistics.median(ttfts), cold_floor_s)
    colds = [t for t in ttfts if t > threshold]
    if learned is None:
        after, short = 0.0, gaps
    else:
        long_gaps = sum(1 for idle, _ in gaps if idle >= learned)
        after = (long_gaps + 1) / (long_gaps + 2)
        short = [g for g in gaps if g[0] < learned]
    if short:
        by_chance = sum(1 for _, cold in short if cold) / len(short)
    else:
        by_chance = len(colds) / len(ttfts) if learned is None else 0.0
    return ColdModel(
        idle_to_cold_s=learned,
        after_idle=after,
        by_chance=by_chance,
        cold_ttft_s=statistics.median(colds) if colds else None,
        last_active_ts=last_activity(window),
        n_gaps=len(gaps),
    )


def describe(provider: str, model: ColdModel, now: float, busy: bool = False) -> str:
    """'provider-b idle 240 s, 80% likely cold' (for reasons and hedge records)."""
    idle = model.idle_s(now)
    idle_text = "busy" if busy else ("idle unknown" if idle is None else f"idle {idle:.3g} s")
    return f"{provider} {idle_text}, {model.chance(now, busy):.0%} likely cold"


def last_activity(window: Sequence[Sample]) -> float | None:
    """When the pair last finished a request (start + total time), any source."""
    if not window:
        return None
    return max(_end(s) for s in window[-20:])


def _end(sample: Sample) -> float:
    return sample.timestamp + (sample.total_s or sample.ttft_s or sample.censored_at_s or 0.0)


def learn_idle_to_cold(
    window: Sequence[Sample], cold_factor: float, cold_floor_s: float
) -> float | None:
    """How long the pair may sit idle before it goes cold, learned from the window: the
    shortest idle time followed by a cold-start-like sample (TTFT above `cold_factor` x
    median and above `cold_floor_s`) among those longer than every idle time after which
    it was still warm. Shorter cold idles are chance (or noise), not a scale-down. None when
    nothing is learned yet. An upper bound of the provider's scale-down time: keep-warm
    probes at a margin of it."""
    return idle_to_cold(idle_gaps(window, cold_factor, cold_floor_s))


def idle_to_cold(idles: Sequence[tuple[float, bool]]) -> float | None:
    """`learn_idle_to_cold` from the gaps `idle_gaps` found."""
    warm = max((idle for idle, cold in idles if not cold), default=0.0)
    return min((idle for idle, cold in idles if cold and idle > warm), default=None)


def idle_gaps(
    window: Sequence[Sample], cold_factor: float, cold_floor_s: float
) -> list[tuple[float, bool]]:
    """(idle time before a first token, was it cold-start-like) for every sample of the
    window that followed an idle gap; empty with fewer than 3 first tokens."""
    ttfts = [s.ttft_s for s in window if s.ttft_s is not None]
    if len(ttfts) < 3:
        return []
    threshold = max(cold_factor * statistics.median(ttfts), cold_floor_s)
    idles: list[tuple[float, bool]] = []
    busy_until: float | None = None
    for sample in window:
        if busy_until is not None and sample.ttft_s is not None:
            idle = sample.timestamp - busy_until
            if idle > 0:
                idles.append((idle, sample.ttft_s > threshold))
        end = _end(sample)
        busy_until = end if busy_until is None else max(busy_until, end)
    return idles
