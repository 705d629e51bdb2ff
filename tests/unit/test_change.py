"""Change detection (learning.change) and what follows from it: a stepped degradation is
found within a bounded number of samples and the model's other pairs are wanted for probes
at once; a stationary market raises (almost) no change. Seeded, synthetic samples through
the real scoring and routing (tests/inprocess.py), no wall clock."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import pytest

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.change import LATE_S, MAX_WARM, Detector, detect
from proxy.settings.policy import ChangeParams, ModelPolicy
from tests.inprocess import MODEL, Loop
from tests.unit.test_convergence import DEEPSEEK, KIMI

PARAMS = ChangeParams()


def synthetic(values: np.ndarray) -> list[Sample]:
    return [Sample("m", "p", Outcome.OK, float(v), 1000.0 + i) for i, v in enumerate(values)]


def lognormal(rng: np.random.Generator, n: int, median: float, sigma: float) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(n))


def with_colds(rng: np.random.Generator, warm: np.ndarray, share: float) -> np.ndarray:
    return np.where(rng.random(len(warm)) < share, lognormal(rng, len(warm), 25.0, 0.5), warm)


@pytest.mark.parametrize("seed", range(10))
def test_each_kind_of_step_is_found_within_a_bounded_number_of_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    before = lognormal(rng, 80, 0.4, 0.25)
    steps = {
        "cold starts": with_colds(rng, lognormal(rng, 40, 0.4, 0.25), 0.3),  # cold-start-prone
        "warm latency": lognormal(rng, 40, 1.2, 0.25),  # 3x: saturated slots
    }
    for what, after in steps.items():
        change = detect(synthetic(np.concatenate([before, after])), PARAMS)
        assert change is not None and change.what == what and change.direction == "degraded"
        assert change.at_ts >= 1000.0 + 80 - 3  # at the step (a sample or so early at most)
        assert change.detected_ts - (1000.0 + 80) < 25  # found within 25 samples
    better = lognormal(rng, 40, 0.15, 0.25)  # a pair gets much faster
    change = detect(synthetic(np.concatenate([before, better])), PARAMS)
    assert change is not None and change.direction == "improved"
    assert change.detected_ts - (1000.0 + 80) < 15


def hedged_then_probed(seed: int) -> list[Sample]:
    """120 attempts with 10% slow ones (8 s) that hedging cut off at 1 s (censored), then
    40 probes of the same pair, never censored: they show the tail the attempts hid."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(160):
        t = 8.0 if rng.random() < 0.1 else 0.3 * float(np.exp(0.25 * rng.standard_normal()))
        if i < 120 and t > 1.0:
            out.append(Sample("m", "p", Outcome.CANCELLED, None, 1000.0 + i, censored_at_s=1.0))
        else:
            out.append(Sample("m", "p", Outcome.OK, t, 1000.0 + i))
    return out


def test_a_censored_tail_that_probes_reveal_is_not_a_change() -> None:
    """The window changed what it shows, the provider did not: over 20 seeds, at most one
    run of unlucky probes (a cluster of slow ones) reads as a change."""
    found = [seed for seed in range(20) if detect(hedged_then_probed(seed), PARAMS) is not None]
    assert len(found) <= 1, found


DEGRADING: dict[str, dict[str, Any]] = {
    **DEEPSEEK,
    "a": {**DEEPSEEK["a"], "cold_start": {"median_s": 25.0, "sigma": 0.5},
          "phases": [{"from_s": 300, "cold_chance": 0.3}]},
}  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
async def test_a_degraded_incumbent_is_seen_and_its_challengers_are_wanted_at_once(
    seed: int,
) -> None:
    """The policy pins a, so every request measures it (the prober is not part of the
    in-process loop): the change is found from a's own samples."""
    loop = Loop(DEGRADING, ModelPolicy(pin="a"), seed)
    await loop.run(150, 2.0)  # 300 s: a leads
    assert loop.shares(50)["a"] == 50
    change = None
    for _ in range(60):
        await loop.request(2.0)
        await loop.board.refresh()
        change = loop.board.snapshot[Pair(MODEL, "a")].change
        if change is not None:
            break
    assert change is not None, "no change found in 60 requests after the degradation"
    assert change.direction == "degraded" and change.what == "cold starts"
    assert change.at_ts >= loop.clock.now - 120 - 10  # the change point is at the step
    assert change.n_after <= 30
    evidence = loop.routing.evidence(MODEL, loop.clock.now)
    wanted = {w.provider: w.reason for w in evidence.wanted}
    assert {"b", "c"} <= set(wanted)  # neither has a sample since the change: probe them
    assert all(wanted[p].startswith("re-measuring after a change: a degraded") for p in "bc")
    reason = str(loop.routing.explain(MODEL, loop.clock.now).ranking.reason)
    assert "a degraded at" in reason


@pytest.mark.parametrize("market", ["deepseek", "kimi"])
async def test_a_stationary_market_raises_almost_no_change(market: str) -> None:
    """MISSION's markets, unchanged, 600 requests (20 market minutes at 0.5/s) per seed,
    three seeds: every change the detector reports is a false alarm, and each would cost a
    burst of probes (docs/policies.md gives the rate). At most one in the three hours."""
    behaviours = DEEPSEEK if market == "deepseek" else KIMI
    found: dict[tuple[int, str], set[float]] = {}
    for seed in range(3):
        loop = Loop(behaviours, ModelPolicy(), seed)
        for _ in range(600):
            await loop.request(2.0)
            for provider in behaviours:
                score = loop.board.snapshot.get(Pair(MODEL, provider))
                if score is not None and score.change is not None:
                    found.setdefault((seed, provider), set()).add(score.change.at_ts)
    assert sum(len(v) for v in found.values()) <= 1, found


async def test_the_plan_reason_names_the_change_of_a_pair() -> None:
    loop = Loop(DEGRADING, ModelPolicy(), 0)
    await loop.run(200, 2.0)
    score = loop.board.snapshot[Pair(MODEL, "a")]
    assert score.change is not None
    reason = str(loop.routing.explain(MODEL, loop.clock.now).ranking.reason)
    assert "a degraded at" in reason, reason


@pytest.mark.parametrize("seed", range(3))
def test_cold_starts_are_seen_though_their_samples_arrive_after_faster_later_ones(
    seed: int,
) -> None:
    """A sample's time is when its attempt started; a 20 s cold start reaches the store
    after the fast requests that started later. Fed as the scoreboard feeds (every second,
    what has arrived, in start-time order from a little before the newest it read), the
    detector still reads them: the cold-start change is found (reading by start time and
    skipping anything older than the newest read, it never was)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(600):
        slow = i >= 300 and rng.random() < 0.3
        ttft = (
            float(20.0 * np.exp(0.2 * rng.standard_normal()))
            if slow
            else float(0.3 * np.exp(0.25 * rng.standard_normal()))
        )
        samples.append(Sample("m", "p", Outcome.OK, ttft, 1000.0 + 0.5 * i))
    detector = Detector(PARAMS)
    for now in range(1000, 1400):
        window = sorted((s for s in samples if s.timestamp + (s.ttft_s or 0) <= now),
                        key=lambda s: s.timestamp)  # fmt: skip
        start = bisect.bisect_left([s.timestamp for s in window], detector.last_ts - LATE_S)
        detector.feed(window[start:])
        if detector.change is not None:
            break
    change = detector.change
    assert change is not None and change.what == "cold starts"
    assert change.detected_ts - 1150.0 < 60  # within a minute of the step (120 requests)


def test_a_long_prompt_is_no_change_and_the_reference_stays_bounded() -> None:
    rng = np.random.default_rng(1)
    detector = Detector(PARAMS)
    base = [Sample("m", "p", Outcome.OK, float(v), 1000.0 + i, prompt_tokens=100)
            for i, v in enumerate(lognormal(rng, 100, 0.3, 0.2))]  # fmt: skip
    long = [Sample("m", "p", Outcome.OK, 0.3 + 40_000 * 5e-5, 1100.0 + i, prompt_tokens=40_000)
            for i in range(5)]  # fmt: skip
    assert detector.feed(base + long, s_per_token=5e-5) is None
    many = [Sample("m", "p", Outcome.OK, float(v), 2000.0 + i)
            for i, v in enumerate(lognormal(rng, 5000, 0.3, 0.2))]  # fmt: skip
    detector.feed(many, s_per_token=5e-5)
    assert len(detector._warm) <= MAX_WARM and len(detector._warm_order) == len(detector._warm)
    assert detector.feed(many) is detector.change  # read once: nothing new


@pytest.mark.parametrize("seed", range(5))
def test_a_pair_that_degraded_is_seen_back_within_a_few_probes(seed: int) -> None:
    """Load saturates a pair (warm latency x4): the change is found, traffic leaves, and the
    pair gets a few samples (probes) in its new regime, far short of a baseline. When the
    load goes, five probes in a row faster than all of them show it: a change, "improved"."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([
        lognormal(rng, 60, 0.35, 0.2),  # its own regime
        lognormal(rng, 14, 1.4, 0.3),  # loaded: found, then a few more
        lognormal(rng, 6, 0.35, 0.2),  # free again: probes after another pair's change
    ])  # fmt: skip
    samples = synthetic(values)
    detector = Detector(PARAMS)
    found = [c for i in range(len(samples)) if (c := detector.feed(samples[i : i + 1]))]
    degraded = next(c for c in found if c.direction == "degraded")
    assert degraded.at_ts >= 1000.0 + 60 - 3
    assert found[-1].direction == "improved" and found[-1].detected_ts <= 1000.0 + 74 + 6
