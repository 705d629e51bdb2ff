"""Routing on simulated markets with the default policy (time settings scaled): each model
ends on the provider that serves it best, and a pair proven first by luck does not lock in."""

from __future__ import annotations

import asyncio
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from proxy.demo import MISSION_MODELS
from proxy.simulator import Market, load_scenario
from tests.e2e.conftest import Proxy, config_for, policy_file, running_proxy, scenario

TIME_SCALE = 0.02
# The default policy with its time settings scaled to the market: cold-start floor and
# evidence half-life (120 s) in market seconds.
SCALED = (
    f"defaults: {{cold_start: {{floor_s: {2.0 * TIME_SCALE}}}, "
    f"uncertainty: {{half_life_s: {120 * TIME_SCALE}}}}}\n"
)


async def drive(proxy: Proxy, model: str, count: int) -> list[str]:
    client = proxy.client()
    served = []
    for _ in range(count):
        response = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=False
        )
        served.append(response.headers["x-ttft-router-provider"])
    return served


async def settle_on(proxy: Proxy, model: str, best: str, *, limit: int) -> int:
    """Requests sent until 27 of the last 30 went to `best` (Thompson sampling still explores a
    close second now and then); fails past `limit` requests."""
    served: list[str] = []
    while len(served) < limit:
        served += await drive(proxy, model, 10)
        if len(served) >= 30 and served[-30:].count(best) >= 27:
            return len(served)
    raise AssertionError(f"{model}: not on {best} after {limit} requests: {Counter(served)}")


async def test_mission_market_routes_each_model_to_its_best_provider(tmp_path: Path) -> None:
    market_scenario = load_scenario(resources.files("proxy") / "scenarios" / "mission.yaml")
    async with Market(market_scenario.with_time_scale(TIME_SCALE)) as market:
        config = config_for(market, MISSION_MODELS, policy_file=policy_file(tmp_path, SCALED))
        async with running_proxy(config) as proxy:
            await asyncio.gather(
                settle_on(proxy, "deepseek-v4-pro", "provider-a", limit=300),
                settle_on(proxy, "kimi-k2.6", "provider-b", limit=600),
            )
            async with proxy.admin() as admin:
                # explain draws like a request does (Thompson sampling): a single answer may
                # be an exploration, so ask 20 times and take the usual choice and a
                # non-exploring reason
                asked: dict[str, list[dict[str, Any]]] = {m: [] for m in MISSION_MODELS}
                for _ in range(20):
                    for m in MISSION_MODELS:
                        answer = await admin.get("/admin/explain", params={"model": m})
                        asked[m].append(answer.json())
                scores = (await admin.get("/admin/scores")).json()
    usual = {m: Counter(e["would_choose"] for e in asked[m]).most_common(1)[0][0] for m in asked}
    assert usual == {"deepseek-v4-pro": "provider-a", "kimi-k2.6": "provider-b"}, asked
    reason = next(e["reason"] for e in asked["kimi-k2.6"] if not e["is_exploration"])
    assert reason.startswith("provider-b has the lowest estimated tail mean (slowest 5%)")
    assert "90% range" in reason and "n=" in reason and "of draws" in reason
    n = {(p["model"], p["provider"]): p["n"] for p in scores["pairs"]}
    # learning was cheap: the clearly worse DeepSeek pairs got a few requests each
    assert (
        n["deepseek-v4-pro", "provider-b"] + n["deepseek-v4-pro", "provider-c"]
        < n["deepseek-v4-pro", "provider-a"]
    ), n


def lock_in_market(seed: int) -> Market:
    """The worst provider answers fast for its first 30 requests, then is cold-start-prone;
    `best` is tight from the start; `mid` has the MISSION table's 9% cold starts."""
    cold = {"cold_start": {"median_s": 7.0, "sigma": 0.2}}
    return Market(
        scenario(
            {
                "worst": {
                    "m-w": {
                        "warm_ttft": {"median_s": 0.7, "sigma": 0.35},
                        "cold_chance": 0.15,
                        **cold,
                        "phases": [
                            {
                                "until_request": 30,
                                "warm_ttft": {"median_s": 0.2, "sigma": 0.1},
                                "cold_chance": 0.0,
                            }
                        ],
                    }
                },
                "best": {"m-b": {"warm_ttft": {"median_s": 0.39, "sigma": 0.23}}},
                "mid": {
                    "m-m": {
                        "warm_ttft": {"median_s": 0.53, "sigma": 0.35},
                        "cold_chance": 0.09,
                        **cold,
                    }
                },
            },
            time_scale=TIME_SCALE,
            seed=seed,
        )
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_pair_proven_first_by_luck_does_not_lock_in(tmp_path: Path, seed: int) -> None:
    # Phase 1: only `worst` and `mid` serve (the best is excluded), so `worst` is proven on
    # its lucky first answers. Phase 2: the policy lets `best` in, measured second.
    path = policy_file(tmp_path, SCALED.replace("defaults: {", "defaults: {exclude: [best], "))
    async with lock_in_market(seed) as market:
        models = {"m": {"worst": "m-w", "best": "m-b", "mid": "m-m"}}
        async with running_proxy(config_for(market, models, policy_file=path)) as proxy:
            first = Counter(await drive(proxy, "m", 44))
            assert first["worst"] >= 15, first  # measured first, on fast answers
            path.write_text(SCALED)
            async with proxy.admin() as admin:
                assert (await admin.post("/admin/policy/reload")).status_code == 200
            sent = await settle_on(proxy, "m", "best", limit=250)
    assert sent <= 250
