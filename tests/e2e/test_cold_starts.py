"""Cold starts as the router counts them: the cold-start share reported for a pair matches
the simulator's own count of cold starts it served."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.simulator import Market
from tests.e2e.conftest import config_for, policy_file, running_proxy, scenario
from tests.helpers import wait_until

HI = [{"role": "user", "content": "hi"}]
TIME_SCALE = 0.02


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_reported_cold_share_matches_the_cold_starts_served(
    tmp_path: Path, seed: int
) -> None:
    behaviour = {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.2},
        "cold_start": {"median_s": 16.0, "sigma": 0.2},
        "cold_chance": 0.2,
        "tokens_per_s": 2000,
    }
    market_scenario = scenario({"p": {"m-p": behaviour}}, time_scale=TIME_SCALE, seed=seed)
    policy = policy_file(tmp_path, f"defaults: {{cold_start: {{floor_s: {5.0 * TIME_SCALE}}}}}\n")
    async with Market(market_scenario) as market:
        config = config_for(market, {"m": {"p": "m-p"}}, policy_file=policy)
        async with running_proxy(config) as proxy:
            client = proxy.client()
            for _ in range(60):
                await client.chat.completions.create(model="m", messages=HI, max_tokens=2)
            served = market.stats("p")["cold_starts"]
            assert 3 <= served <= 30  # the market did send cold starts

            async def scored() -> dict[str, float] | None:
                async with proxy.admin() as admin:
                    pairs = (await admin.get("/admin/scores")).json()["pairs"]
                return pairs[0] if pairs and pairs[0]["n"] == 60 else None

            score = await wait_until(scored, timeout=5)
    assert round(score["cold_share"] * score["n"]) == served
