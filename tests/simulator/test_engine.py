"""Engine decisions without HTTP: reproducible draws, faults, cold starts, slots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from proxy.simulator import Fault, ModelBehaviour, ModelEngine, derive_rng, load_scenario
from tests.helpers import wait_until

MISSION = Path(__file__).resolve().parents[2] / "proxy" / "scenarios" / "mission.yaml"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def behaviour(**fields: object) -> ModelBehaviour:
    return ModelBehaviour.model_validate({"warm_ttft": {"median_s": 1.0, "sigma": 0.5}, **fields})


def ttfts(engine: ModelEngine, count: int) -> list[float]:
    values = []
    for _ in range(count):
        admission = engine.admit(engine.draw())
        engine.release()
        values.append(admission.ttft_s)
    return values


def test_same_seed_same_draws_other_pair_other_draws() -> None:
    def run(provider: str, model: str) -> list[float]:
        return ttfts(ModelEngine(behaviour(), derive_rng(7, provider, model), 1.0), 20)

    assert run("p", "m") == run("p", "m")
    assert run("p", "m") != run("p", "other")
    assert run("p", "m") != run("q", "m")


def test_time_scale_multiplies_delays() -> None:
    slow = ttfts(ModelEngine(behaviour(), derive_rng(1, "p", "m"), 1.0), 10)
    fast = ttfts(ModelEngine(behaviour(), derive_rng(1, "p", "m"), 0.01), 10)
    assert fast == pytest.approx([x * 0.01 for x in slow])


def test_prefill_grows_with_the_prompt_at_the_model_rate_and_phase() -> None:
    fields = {"prefill_tokens_per_s": 2000.0,
              "phases": [{"from_request": 1, "prefill_tokens_per_s": 8000.0}]}  # fmt: skip
    engine = ModelEngine(behaviour(**fields), derive_rng(1, "p", "m"), 0.5)
    engine.counters.requests = 1
    first = engine.draw()
    assert engine.prefill_s(first, 4000) == 4000 / 2000 * 0.5  # scaled like every delay
    engine.counters.requests = 2
    assert engine.prefill_s(engine.draw(), 4000) == 4000 / 8000 * 0.5
    plain = ModelEngine(behaviour(), derive_rng(1, "p", "m"), 1.0)
    assert plain.prefill_s(plain.draw(), 20_000) == 0.0  # no rate: the prompt costs nothing


def test_fault_shares_follow_rates() -> None:
    rates = {
        "error_500_rate": 0.1,
        "error_429_rate": 0.2,
        "hang_rate": 0.05,
        "drop_midstream_rate": 0.15,
    }
    engine = ModelEngine(behaviour(**rates), derive_rng(3, "p", "m"), 1.0)
    draws = [engine.draw().fault for _ in range(4000)]
    shares = {fault: draws.count(fault) / len(draws) for fault in Fault}
    assert shares[Fault.ERROR_500] == pytest.approx(0.1, abs=0.02)
    assert shares[Fault.ERROR_429] == pytest.approx(0.2, abs=0.02)
    assert shares[Fault.HANG] == pytest.approx(0.05, abs=0.02)
    assert shares[Fault.DROP] == pytest.approx(0.15, abs=0.02)


def test_cold_chance_gives_cold_starts_with_cold_latency() -> None:
    engine = ModelEngine(
        behaviour(cold_chance=0.1, cold_start={"median_s": 30.0, "sigma": 0.0}),
        derive_rng(5, "p", "m"),
        1.0,
    )
    values = ttfts(engine, 2000)
    cold = [v for v in values if v == 30.0]
    assert len(cold) == engine.counters.cold_starts
    assert len(cold) / len(values) == pytest.approx(0.1, abs=0.02)


def test_scale_to_zero_after_idle_then_warm_again() -> None:
    clock = FakeClock()
    engine = ModelEngine(
        behaviour(scale_to_zero_after_s=60, cold_start={"median_s": 20.0, "sigma": 0.0}),
        derive_rng(5, "p", "m"),
        0.5,
        clock,
    )
    clock.now += 29  # 29 s idle < 60 * 0.5
    assert not engine.admit(engine.draw()).is_cold
    engine.release()
    clock.now += 31
    first = engine.admit(engine.draw())
    assert first.is_cold and first.ttft_s == 10.0
    clock.now += 4  # a second request arrives during the load: waits what remains of it
    second = engine.admit(engine.draw())
    assert not second.is_cold and second.ttft_s > 6.0
    clock.now += 10
    engine.release()
    engine.release()
    clock.now += 1
    assert not engine.admit(engine.draw()).is_cold
    assert engine.counters.cold_starts == 1


async def test_slots_queue_requests_beyond_max_concurrency() -> None:
    engine = ModelEngine(behaviour(max_concurrency=2), derive_rng(5, "p", "m"), 1.0)
    release = asyncio.Event()
    admitted: list[int] = []

    async def one(i: int) -> None:
        with engine.request():
            async with engine.slot(engine.draw()):
                admitted.append(i)
                await release.wait()

    tasks = [asyncio.create_task(one(i)) for i in range(3)]
    async with asyncio.timeout(5):
        await wait_until(lambda: len(admitted) == 2)
        assert engine.in_flight == 3
        await asyncio.sleep(0.01)  # give a wrongly free slot the chance to admit the third
        assert len(admitted) == 2
        release.set()
        await asyncio.gather(*tasks)
    assert admitted[2] == 2 and engine.in_flight == 0


def test_mission_draws_reproduce_the_table() -> None:
    """Many draws per pair (no HTTP): the mixture lands on the table's median and p95."""
    table = {
        "deepseek-ai/DeepSeek-V4-Pro": (0.39, 0.57),
        "accounts/b/models/deepseek-v4-pro": (0.55, 6.30),
        "deepseek-v4-pro-fp8": (0.73, 6.91),
        "moonshotai/Kimi-K2.6": (0.35, 5.98),
        "accounts/b/models/kimi-k2p6": (0.25, 1.08),
        "kimi-k2.6-int4": (0.43, 1.70),
    }
    scenario = load_scenario(MISSION)
    for provider, provider_scenario in scenario.providers.items():
        for model, model_behaviour in provider_scenario.models.items():
            engine = ModelEngine(model_behaviour, derive_rng(scenario.seed, provider, model), 1.0)
            values = np.array(ttfts(engine, 10_000))
            median, p95 = table[model]
            assert np.median(values) == pytest.approx(median, rel=0.05), model
            assert np.percentile(values, 95) == pytest.approx(p95, rel=0.08), model
