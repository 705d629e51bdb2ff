"""MISSION.md's market: after warm-up, each model goes to the provider that serves it best."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

from proxy.demo import MISSION_MODELS
from proxy.simulator import Market, load_scenario
from tests.e2e.conftest import Proxy, config_for, policy_file, running_proxy

TIME_SCALE = 0.02
WARMUP_PER_PAIR = 60


async def drive(proxy: Proxy, model: str, count: int) -> list[str]:
    client = proxy.client()
    served = []
    for _ in range(count):
        response = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=False
        )
        served.append(response.headers["x-ttft-router-provider"])
    return served


async def test_mission_market_routes_each_model_to_its_best_provider(tmp_path: Path) -> None:
    scenario = load_scenario(resources.files("proxy") / "scenarios" / "mission.yaml")
    policy = policy_file(
        tmp_path,
        f"defaults: {{min_samples: {WARMUP_PER_PAIR}, exploration_share: 0.25, "
        f"cold_start: {{floor_s: {2.0 * TIME_SCALE}}}}}\n",
    )
    async with Market(scenario.with_time_scale(TIME_SCALE)) as market:
        config = config_for(market, MISSION_MODELS, policy_file=policy)
        async with running_proxy(config) as proxy:
            # Warm-up: while no pair is proven the least-measured goes first; after that,
            # exploration (25% here) measures the rest, until every pair is proven.
            board = proxy.services.scoreboard

            async def warm(model: str) -> None:
                for _ in range(20):  # bounded: at most 20 x 30 requests
                    proven = [s.is_proven for p, s in board.snapshot.items() if p.model == model]
                    if len(proven) == 3 and all(proven):
                        return
                    await drive(proxy, model, 30)
                raise AssertionError(f"{model}: pairs not proven: {dict(board.snapshot)}")

            await asyncio.gather(*(warm(m) for m in MISSION_MODELS))
            deepseek, kimi = await asyncio.gather(
                drive(proxy, "deepseek-v4-pro", 20), drive(proxy, "kimi-k2.6", 20)
            )
            assert set(deepseek) == {"provider-a"}, deepseek
            assert set(kimi) == {"provider-b"}, kimi
            async with proxy.admin() as admin:
                explain = (await admin.get("/admin/explain", params={"model": "kimi-k2.6"})).json()
                scores = (await admin.get("/admin/scores")).json()
    assert explain["would_choose"] == "provider-b"
    reason = explain["reason"]
    assert reason.startswith(
        "provider-b has the lowest tail mean (slowest 5%) among 3 proven pairs"
    )
    assert "p95" in reason and "median" in reason and "CV" in reason and "n=" in reason
    rows = {(p["model"], p["provider"]): p for p in scores["pairs"]}
    a, b = rows[("deepseek-v4-pro", "provider-a")], rows[("deepseek-v4-pro", "provider-b")]
    # provider-b's cold starts make it cold-start-prone. provider-a's band is not asserted: at
    # 1/50 time scale its ~8 ms TTFTs sit in loopback and event-loop jitter, and one 100 ms
    # stall among its samples lifts its CV (std/mean) to ~1 (seen once in CI). Its p95 over
    # median stays far below provider-b's, whose p95 lies in the cold-start cluster.
    assert b["band"] == "cold-start-prone", b
    assert a["tail_ratio"] < b["tail_ratio"] / 2, (a, b)
