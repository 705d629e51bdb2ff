"""The mission scenario reproduces MISSION.md's table through real HTTP streams.

Each pair gets 150 sequential streamed requests (the six pairs run concurrently) at
time_scale 0.05; a sample is the time from sending a request to the first chunk carrying
content (not the role-only chunk). The seed is the scenario's, so the draws are the same on
every run; only the harness overhead varies.

That overhead (client and server in one Python process, HTTP on loopback, timer wake-ups:
~2-3 ms per request) is not scaled, so dividing by 0.05 would inflate it twentyfold, to
0.04-0.06 s: a fifth of Kimi B's 0.25 s median. A seventh, reference pair with a constant
TTFT runs alongside; its median excess over that constant is the harness overhead,
subtracted from every sample before dividing by the time scale. The overhead is asserted
small, so a slow server still fails the test.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import numpy as np
import orjson

from proxy.simulator import Market, Scenario, load_scenario

MISSION = Path(__file__).resolve().parents[2] / "proxy" / "scenarios" / "mission.yaml"
TIME_SCALE = 0.05
REQUESTS_PER_PAIR = 150
MAX_OVERHEAD_S = 0.010  # real seconds per request
# (provider, provider's model id) -> (median TTFT s, p95 TTFT s) from MISSION.md
TABLE = {
    ("provider-a", "deepseek-ai/DeepSeek-V4-Pro"): (0.39, 0.57),
    ("provider-b", "accounts/b/models/deepseek-v4-pro"): (0.55, 6.30),
    ("provider-c", "deepseek-v4-pro-fp8"): (0.73, 6.91),
    ("provider-a", "moonshotai/Kimi-K2.6"): (0.35, 5.98),
    ("provider-b", "accounts/b/models/kimi-k2p6"): (0.25, 1.08),
    ("provider-c", "kimi-k2.6-int4"): (0.43, 1.70),
}
REFERENCE_PAIR = ("harness", "constant-model")
REFERENCE_TTFT_S = 0.4
PROMPT = [{"role": "user", "content": "Reply with one word."}]


def with_reference_pair(scenario: Scenario) -> Scenario:
    model = {"warm_ttft": {"median_s": REFERENCE_TTFT_S, "sigma": 0.0}}
    provider = {"api_key": "harness-key", "models": {REFERENCE_PAIR[1]: model}}
    providers = {name: p.model_dump() for name, p in scenario.providers.items()}
    return Scenario.model_validate(
        {**scenario.model_dump(), "providers": {**providers, REFERENCE_PAIR[0]: provider}}
    )


def carries_content(line: bytes) -> bool:
    """Whether an SSE line is a chunk with non-empty content (the role chunk has none)."""
    if not line.startswith(b"data: {"):
        return False
    chunk = orjson.loads(line.removeprefix(b"data: "))
    return any(choice["delta"].get("content") for choice in chunk["choices"])


async def measure_pair(market: Market, provider: str, model: str) -> np.ndarray:
    """Sequential streamed requests; each TTFT in real seconds."""
    samples = []
    url = market.base_url(provider) + "/chat/completions"
    headers = {"Authorization": f"Bearer {market.api_key(provider)}"}
    body = {"model": model, "messages": PROMPT, "stream": True, "max_tokens": 1, "temperature": 0}
    async with aiohttp.ClientSession() as http:
        for _ in range(REQUESTS_PER_PAIR):
            started = time.perf_counter()
            async with http.post(url, json=body, headers=headers) as response:
                ttft_s = None
                async for line in response.content:
                    if ttft_s is None and carries_content(line):
                        ttft_s = time.perf_counter() - started
            assert ttft_s is not None
            samples.append(ttft_s)
    return np.array(samples)


async def test_mission_market_reproduces_the_table() -> None:
    scenario = with_reference_pair(load_scenario(MISSION).with_time_scale(TIME_SCALE))
    pairs = [*TABLE, REFERENCE_PAIR]
    async with Market(scenario.with_free_ports()) as market, asyncio.timeout(60):
        results = await asyncio.gather(*(measure_pair(market, *pair) for pair in pairs))
        completed = {p: market.stats(p)["completed"] for p in market.providers}
    overhead_s = float(np.median(results[-1])) - REFERENCE_TTFT_S * TIME_SCALE
    report = [f"harness overhead {overhead_s * 1000:.2f} ms per request (real time)"]
    failures = []
    for (pair, (median, p95)), raw in zip(TABLE.items(), results, strict=False):
        samples = (raw - overhead_s) / TIME_SCALE
        got_median = float(np.median(samples))
        got_p95 = float(np.percentile(samples, 95))
        report.append(
            f"{pair[0]} {pair[1]}: median {got_median:.3f} s (table {median}), "
            f"p95 {got_p95:.2f} s (table {p95}); uncorrected median "
            f"{float(np.median(raw)) / TIME_SCALE:.3f} s"
        )
        if abs(got_median / median - 1) > 0.25 or abs(got_p95 / p95 - 1) > 0.35:
            failures.append(pair)
    print("\n".join(report))
    assert overhead_s < MAX_OVERHEAD_S, "\n".join(report)
    assert not failures, "\n".join(report)
    assert completed == {
        "provider-a": 2 * REQUESTS_PER_PAIR,
        "provider-b": 2 * REQUESTS_PER_PAIR,
        "provider-c": 2 * REQUESTS_PER_PAIR,
        "harness": REQUESTS_PER_PAIR,
    }
