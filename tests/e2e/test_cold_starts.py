"""Cold starts as the router counts them, end to end: the cold-start share a pair's score
reports is its own samples' (the ones /admin/samples shows, split at the threshold it
reports), and the market did serve cold starts. Whether a TTFT measured through real
sockets at a compressed time scale lands above the threshold depends on the machine, so
the count against the market's own is checked in-process (tests/unit/test_cold_counting.py),
with exact synthetic TTFTs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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


async def test_the_reported_cold_share_is_the_share_of_its_own_samples_above_the_threshold(
    tmp_path: Path,
) -> None:
    behaviour = {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.2},
        "cold_start": {"median_s": 30.0, "sigma": 0.2},
        "cold_chance": 0.2,
        "tokens_per_s": 2000,
    }
    async with one_pair(tmp_path, behaviour, TIME_SCALE, 1, 10.0) as (market, proxy):
        client = proxy.client()
        for _ in range(60):
            await client.chat.completions.create(model="m", messages=HI, max_tokens=2)
        served = market.stats("p")["cold_starts"]
        score = await score_once_counted(proxy, 60)
        async with proxy.admin() as admin:
            shown = (await admin.get("/admin/samples", params={"model": "m"})).json()
    assert 3 <= served <= 30  # the market did send cold starts
    pair = shown["pairs"][0]
    threshold = pair["cold_threshold_s"]
    above = sum(1 for s in pair["samples"] if s["ttft_s"] is not None and s["ttft_s"] > threshold)
    assert len(pair["samples"]) == 60
    assert round(score["cold_share"] * score["n"]) == above > 0
