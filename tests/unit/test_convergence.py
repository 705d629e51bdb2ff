"""Routing converges on the best provider: synthetic samples through the real store, scoring
and routing (tests/inprocess.py), several seeds, no sockets, no wall clock. Each seed replays
exactly, so a bound here holds or fails the same way on every machine.

These replace the end-to-end test's statistical assertions ("27 of the last 30 on the best
provider within 600 requests", over real sockets and the wall clock at a 50x time scale),
which were re-tuned after CI failures three times.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.settings.policy import ModelPolicy, PolicySet
from tests.inprocess import Loop

SEEDS = range(5)
GAP_S = 2.0  # 0.5 requests/s, as the routing benchmark's markets

# MISSION.md's table (proxy/scenarios/mission.yaml's calibration), in market seconds.
DEEPSEEK: dict[str, dict[str, Any]] = {
    "a": {"warm_ttft": {"median_s": 0.39, "sigma": 0.23}},
    "b": {"warm_ttft": {"median_s": 0.527, "sigma": 0.35},
          "cold_start": {"median_s": 6.48, "sigma": 0.2}, "cold_chance": 0.09},
    "c": {"warm_ttft": {"median_s": 0.70, "sigma": 0.35},
          "cold_start": {"median_s": 7.10, "sigma": 0.2}, "cold_chance": 0.09},
}  # fmt: skip
KIMI: dict[str, dict[str, Any]] = {
    "a": {"warm_ttft": {"median_s": 0.337, "sigma": 0.30},
          "cold_start": {"median_s": 6.15, "sigma": 0.2}, "cold_chance": 0.09},
    "b": {"warm_ttft": {"median_s": 0.25, "sigma": 0.89}},
    "c": {"warm_ttft": {"median_s": 0.422, "sigma": 0.745},
          "cold_start": {"median_s": 40.0, "sigma": 0.08}, "cold_chance": 0.02},
}  # fmt: skip


def default_policy(**over: Any) -> ModelPolicy:
    """The shipped policy's defaults (policies/default.yaml states the model defaults)."""
    return ModelPolicy.model_validate(over)


@pytest.mark.parametrize("seed", SEEDS)
async def test_deepseek_settles_on_its_tight_provider_and_learning_is_cheap(seed: int) -> None:
    loop = Loop(DEEPSEEK, default_policy(), seed)
    await loop.run(300, GAP_S)
    late = loop.shares(100)
    assert late["a"] >= 95, late  # settled: the cold-prone pairs are clearly worse
    total = loop.shares(300)
    assert total["b"] + total["c"] < 30, total  # and finding that out cost few requests


@pytest.mark.parametrize("seed", SEEDS)
async def test_kimi_settles_on_its_best_provider(seed: int) -> None:
    """Kimi's b (no cold starts, wide warm spread) against a (9% cold starts) and c (rare
    40 s cold starts, a warm tail close to b's): c stays plausible longer, so the bound is
    looser than DeepSeek's, and a is given up quickly."""
    loop = Loop(KIMI, default_policy(), seed)
    await loop.run(600, GAP_S)
    late = loop.shares(200)
    assert late["b"] >= 150, late
    assert loop.shares(600)["a"] < 80, loop.shares(600)


LOCK_IN: dict[str, dict[str, Any]] = {
    # fast for its first 30 requests, then cold-start-prone
    "worst": {"warm_ttft": {"median_s": 0.7, "sigma": 0.35}, "cold_chance": 0.15,
              "cold_start": {"median_s": 7.0, "sigma": 0.2},
              "phases": [{"until_request": 30, "warm_ttft": {"median_s": 0.2, "sigma": 0.1},
                          "cold_chance": 0.0}]},
    "best": {"warm_ttft": {"median_s": 0.39, "sigma": 0.23}},
    "mid": {"warm_ttft": {"median_s": 0.53, "sigma": 0.35}, "cold_chance": 0.09,
            "cold_start": {"median_s": 7.0, "sigma": 0.2}},
}  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_pair_proven_first_by_luck_does_not_lock_in(seed: int) -> None:
    """Phase 1: `best` is excluded, so `worst` is proven on its lucky first answers.
    Phase 2: the policy lets `best` in, measured second: it takes over."""
    loop = Loop(LOCK_IN, default_policy(exclude=["best"]), seed)
    await loop.run(44, GAP_S)
    assert loop.shares(44)["worst"] >= 15, loop.shares(44)  # measured first, on fast answers
    loop.policies.current = PolicySet(default=default_policy())
    await loop.run(250, GAP_S)
    assert loop.shares(50)["best"] >= 45, loop.shares(50)


async def test_the_same_seed_replays_the_same_choices() -> None:
    """No wall clock and no unseeded draw anywhere in the loop: a replay is exact."""
    one, two = Loop(KIMI, default_policy(), 3), Loop(KIMI, default_policy(), 3)
    await one.run(150, GAP_S)
    await two.run(150, GAP_S)
    assert [(s.provider, s.ttft_s) for s in one.served] == [
        (s.provider, s.ttft_s) for s in two.served
    ]
