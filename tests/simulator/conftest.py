"""Fixtures of the simulator tests: a running market of small, fast models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from proxy.simulator import Market, Scenario

# time_scale 0.01: a 1 s delay lasts 10 ms.
FAST_MODELS = {
    "org/fast-model": {"warm_ttft": {"median_s": 0.5, "sigma": 0.0}, "tokens_per_s": 100},
    "slow-stream": {"warm_ttft": {"median_s": 0.5, "sigma": 0.0}, "tokens_per_s": 1},
    "always-500": {"warm_ttft": {"median_s": 0.5}, "error_500_rate": 1.0},
    "always-429": {"warm_ttft": {"median_s": 0.5}, "error_429_rate": 1.0, "retry_after_s": 300},
    "always-drop": {"warm_ttft": {"median_s": 0.5}, "drop_midstream_rate": 1.0},
    "always-hang": {"warm_ttft": {"median_s": 0.5}, "hang_rate": 1.0},
    "single-slot": {
        "warm_ttft": {"median_s": 5.0, "sigma": 0.0},
        "max_concurrency": 1,
        "tokens_per_s": 1000,
    },
    "scales-to-zero": {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.0},
        "cold_start": {"median_s": 10.0, "sigma": 0.0},
        "scale_to_zero_after_s": 5.0,
    },
}


@pytest.fixture
def fast_scenario() -> Scenario:
    """Provider ``sim-a`` with ``FAST_MODELS``; provider ``sim-b`` with one model of its own."""
    return Scenario.model_validate(
        {
            "time_scale": 0.01,
            "seed": 11,
            "providers": {
                "sim-a": {"api_key": "key-a", "models": FAST_MODELS},
                "sim-b": {
                    "api_key": "key-b",
                    "models": {"b/own-id": {"warm_ttft": {"median_s": 0.5}}},
                },
            },
        }
    )


@pytest.fixture
async def market(fast_scenario: Scenario) -> AsyncIterator[Market]:
    async with Market(fast_scenario) as running:
        yield running


@pytest.fixture
async def client(market: Market) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK pointed at ``sim-a``; no retries, so each call is one request."""
    sdk = openai.AsyncOpenAI(
        base_url=market.base_url("sim-a"),
        api_key=market.api_key("sim-a"),
        max_retries=0,
        timeout=10.0,
    )
    async with sdk:
        yield sdk


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw HTTP client, for what the SDK hides (headers, bytes, early close)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
