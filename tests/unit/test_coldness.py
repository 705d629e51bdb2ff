"""Cold-start awareness: idle time -> the chance a pair is cold now, and what reads it (the
`expected` objective, an immediate hedge, the prober's wish to see past a censored tail)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from proxy.core.domain import ColdModel, Outcome, Pair, Sample, Score, Source
from proxy.learning.coldness import cold_model, describe
from proxy.learning.scoreboard import with_cold_models
from proxy.learning.stats import compute_score, score_model
from proxy.routing.advice import evidence_wanted
from proxy.routing.ranking import ModelView, prepare, rank
from proxy.serving.hedge import expected_saving, hedge_delay
from proxy.settings.policy import Hedge, ModelPolicy

NOW = 1_000_000.0
WARM, COLD = 0.3, 20.0
SCALE_DOWN_S = 45.0


def idle_pattern(provider: str = "a", end: float = NOW - 100) -> list[Sample]:
    """A pair that scales to zero after 45 s idle: requests 5-30 s apart are warm, those
    after 60-120 s idle are cold starts; it finished its last request at `end`."""
    gaps = [5, 10, 60, 8, 30, 90, 5, 120, 12, 70, 20, 6]
    starts, t = [], 0.0
    for gap in gaps:
        t += gap
        starts.append((t, COLD if gap > SCALE_DOWN_S else WARM))
        t += starts[-1][1] + 0.5
    shift = end - t
    return [Sample("m", provider, Outcome.OK, ttft, at + shift, total_s=ttft + 0.5)
            for at, ttft in starts]  # fmt: skip


def test_idle_time_predicts_a_cold_start_from_the_learned_scale_down() -> None:
    window = idle_pattern()
    model = cold_model(window, cold_factor=4.0, cold_floor_s=2.0)
    assert model is not None
    assert 30 < (model.idle_to_cold_s or 0) <= 60  # between the longest warm and a cold idle
    assert model.cold_ttft_s == COLD
    assert model.after_idle == pytest.approx(5 / 6)  # four cold idles: (4 + 1) / (4 + 2)
    assert model.by_chance == 0.0  # never cold after a short idle
    last = window[-1].timestamp + (window[-1].total_s or 0)
    assert model.chance(last + 10) == 0.0
    assert model.chance(last + 300) == pytest.approx(5 / 6)
    assert model.chance(last + 300, busy=True) == 0.0  # a request in flight: not idle
    assert describe("provider-b", model, last + 240) == "provider-b idle 240 s, 83% likely cold"


def test_cold_by_chance_is_the_cold_share_whatever_the_idle() -> None:
    rng = np.random.default_rng(3)
    window = [
        Sample("m", "a", Outcome.OK, COLD if rng.random() < 0.1 else WARM, NOW - 1000 + i * 5)
        for i in range(150)
    ]
    model = cold_model(window, 4.0, 2.0)
    assert model is not None and model.idle_to_cold_s is None
    share = sum(s.ttft_s == COLD for s in window) / len(window)
    assert model.chance(NOW) == pytest.approx(share, abs=0.02)
    assert cold_model(window[:2], 4.0, 2.0) is None  # too little to say anything


def scored(pairs: dict[str, list[Sample]], policy: ModelPolicy) -> dict[Pair, Score]:
    windows = {Pair("m", p): w for p, w in pairs.items()}
    params = policy.window_params()
    return with_cold_models(score_model(windows, params, NOW, 1), windows, params, NOW)


def steady(provider: str, ttft: float, end: float) -> list[Sample]:
    return [
        Sample("m", provider, Outcome.OK, ttft, end - 60 + i * 3, total_s=0.5) for i in range(20)
    ]


def test_expected_objective_avoids_a_fast_pair_that_is_probably_cold_now() -> None:
    policy = ModelPolicy(objective="expected", exploration_share=0.0)
    pairs = {"a": "ua", "b": "ub"}
    # a: fast when warm (0.3 s) but idle-cold; b: 0.8 s, always warm, busy just now.
    scores = scored({"a": idle_pattern(end=NOW - 300), "b": steady("b", 0.8, NOW)}, policy)

    def choose(now: float) -> tuple[str, str]:
        ranking = rank(ModelView(policy, "m", pairs, scores, now), random.Random(1))
        return ranking.ranked[0].provider, str(ranking.reason)

    chosen, reason = choose(NOW)  # a idle 300 s: 83% likely cold, expected ~16.7 s
    assert chosen == "b"
    assert "a idle 300 s, 83% likely cold" in reason and "expected TTFT" in reason
    # a moment after a's last request it is warm: its 0.3 s median wins
    assert choose(NOW - 300 + 5)[0] == "a"
    standing = prepare(ModelView(policy, "m", pairs, scores, NOW))
    assert not standing.lasts  # the chance moves with the clock: the router does not keep it
    tail = ModelPolicy(exploration_share=0.0)
    only_b = scored({"b": steady("b", 0.8, NOW)}, tail)
    assert prepare(ModelView(tail, "m", pairs, only_b, NOW)).lasts


def test_a_probably_cold_primary_is_hedged_at_once() -> None:
    cold = ColdModel(SCALE_DOWN_S, 0.8, 0.02, COLD, NOW - 240, n_gaps=12)
    params = ModelPolicy().window_params()
    warm = compute_score(Pair("m", "b"), steady("b", 0.3, NOW - 240), params, NOW)
    score = replace(warm, cold=cold)
    delay = hedge_delay(Hedge(enabled=True), score, NOW)
    assert (delay.seconds, delay.trigger) == (0.0, "cold")
    assert delay.basis == "b idle 240 s, 80% likely cold"
    # busy (a request in flight on it), or below the policy's chance: the usual delay
    assert hedge_delay(Hedge(enabled=True), score, NOW, busy=True).trigger == "late"
    assert hedge_delay(Hedge(enabled=True, cold_chance=0.9), score, NOW).trigger == "late"
    # what the hedge saved: the primary's cold start against the hedge's answer
    assert expected_saving(score, "cold", 0.4, 0.7) == pytest.approx(COLD - 0.7)
    assert expected_saving(score, "late", 0.4, 0.7) == pytest.approx(0.0, abs=1e-9)


def hedged_window(seed: int, probes: int) -> tuple[list[Sample], float]:
    """A pair with 10% cold starts of ~8 s whose slow passive attempts are all hedged away
    at 1 s (censored there), plus `probes` uncensored probes. Returns (window, true p95)."""
    rng = np.random.default_rng(seed)

    def ttft() -> float:
        return float(8.0 * np.exp(0.2 * rng.standard_normal()) if rng.random() < 0.1
                     else 0.3 * np.exp(0.25 * rng.standard_normal()))  # fmt: skip

    out = []
    for i in range(180):
        t = ttft()
        out.append(Sample("m", "a", Outcome.OK if t <= 1.0 else Outcome.CANCELLED,
                          t if t <= 1.0 else None, NOW - 95 + i * 0.5,
                          censored_at_s=None if t <= 1.0 else 1.0))  # fmt: skip
    for i in range(probes):
        out.append(Sample("m", "a", Outcome.OK, ttft(), NOW - 94 + i * 4, source=Source.PROBE))
    truth = np.quantile(
        [8.0 * np.exp(0.2 * z) if u < 0.1 else 0.3 * np.exp(0.25 * z)
         for u, z in zip(rng.random(200_000), rng.standard_normal(200_000), strict=True)], 0.95,
    )  # fmt: skip
    return out, float(truth)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_hedged_away_tail_is_recovered_by_probes(seed: int) -> None:
    policy = ModelPolicy()
    params = policy.window_params()
    alone, truth = hedged_window(seed, probes=0)
    blind = compute_score(Pair("m", "a"), alone, params, NOW)
    assert blind.p95 == 1.0  # a lower bound: every attempt past 1 s was hedged away
    pairs = {"a": "ua", "b": "ub"}
    wanted = evidence_wanted(ModelView(
        policy, "m", pairs,
        score_model({Pair("m", "a"): alone, Pair("m", "b"): steady("b", 0.5, NOW)}, params,
                    NOW, 1), NOW,
    ))  # fmt: skip
    assert [w.provider for w in wanted] == ["a"] and "censored tail" in wanted[0].reason
    probed, truth = hedged_window(seed, probes=2 * policy.min_samples)
    score = compute_score(Pair("m", "a"), probed, params, NOW)
    assert score.p95 is not None and abs(score.p95 - truth) / truth < 0.35
    assert not evidence_wanted(ModelView(
        policy, "m", pairs,
        score_model({Pair("m", "a"): probed, Pair("m", "b"): steady("b", 0.5, NOW)}, params,
                    NOW, 1), NOW,
    ))  # fmt: skip
