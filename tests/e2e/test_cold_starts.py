"""Cold starts as the router counts them: the cold-start share reported for a pair matches
the simulator's own count of cold starts it served, whether they come by chance or after
idling (then the pair's cold model learns the scale-down time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from proxy.simulator import Market
from tests.e2e.conftest import Proxy, config_for, policy_file, running_proxy, scenario
from tests.helpers import wait_until

HI = [{"role": "user", "content": "hi"}]
TIME_SCALE = 0.02


@asynccontextmanager
async def one_pair(
    tmp_path: Path, behaviour: dict[str, Any], scale: float, seed: int, floor_s: float
) -> AsyncIterator[tuple[Market, Proxy]]:
    """Model m on provider p (as `behaviour`), a cold-start floor of `floor_s` market s."""
    market_scenario = scenario({"p": {"m-p": behaviour}}, time_scale=scale, seed=seed)
    policy = policy_file(tmp_path, f"defaults: {{cold_start: {{floor_s: {floor_s * scale}}}}}\n")
    async with Market(market_scenario) as market:
        config = config_for(market, {"m": {"p": "m-p"}}, policy_file=policy)
        async with running_proxy(config) as proxy:
            yield market, proxy


async def score_once_counted(proxy: Proxy, n: int) -> dict[str, Any]:
    """The pair's /admin/scores entry once all `n` samples are in."""

    async def scored() -> dict[str, Any] | None:
        async with proxy.admin() as admin:
            pairs = (await admin.get("/admin/scores")).json()["pairs"]
        return pairs[0] if pairs and pairs[0]["n"] == n else None

    return await wait_until(scored, timeout=5)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_reported_cold_share_matches_the_cold_starts_served(
    tmp_path: Path, seed: int
) -> None:
    behaviour = {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.2},
        "cold_start": {"median_s": 30.0, "sigma": 0.2},
        "cold_chance": 0.2,
        "tokens_per_s": 2000,
    }
    async with one_pair(tmp_path, behaviour, TIME_SCALE, seed, 10.0) as (market, proxy):
        client = proxy.client()
        for _ in range(60):
            await client.chat.completions.create(model="m", messages=HI, max_tokens=2)
        served = market.stats("p")["cold_starts"]
        assert 3 <= served <= 30  # the market did send cold starts
        score = await score_once_counted(proxy, 60)
    assert round(score["cold_share"] * score["n"]) == served


async def test_idle_cold_starts_are_counted_and_their_scale_down_learned(tmp_path: Path) -> None:
    """A provider that scales to zero after 120 market s idle (1.2 s here; a loaded machine
    may stall a warm gap past 0.5 s): every request after a 2 s pause is a cold start. The
    share the proxy reports matches the simulator's count, and the pair's cold model learns
    a scale-down time between the idles."""
    scale = 0.01
    behaviour = {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.2},
        "cold_start": {"median_s": 30.0, "sigma": 0.1},
        "scale_to_zero_after_s": 120,
        "tokens_per_s": 2000,
    }
    async with one_pair(tmp_path, behaviour, scale, 4, 5.0) as (market, proxy):
        client = proxy.client()
        for i in range(18):
            if i % 6 == 5:
                await asyncio.sleep(2.0)  # idle past the scale-down: the next is cold
            await client.chat.completions.create(model="m", messages=HI, max_tokens=2)
        served = market.stats("p")["cold_starts"]
        score = await score_once_counted(proxy, 18)
    assert served == 3  # the pauses before requests 5, 11 and 17
    assert round(score["cold_share"] * score["n"]) == served
    cold = score["cold"]
    assert cold["idle_to_cold_s"] is not None and 0.3 < cold["idle_to_cold_s"] <= 2.1
    assert cold["after_idle"] == pytest.approx(4 / 5, abs=1e-3)  # three cold idles seen
    assert cold["by_chance"] == 0.0
