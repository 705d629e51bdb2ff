"""Phases: behaviour that changes at a market time or after a number of requests.

Validation and the engine's choice of phase without HTTP (a fake clock); then through real
HTTP with the official SDK: a pair fast for its first requests, a pair down for a stretch of
market time, a pair that refuses connections, and ``/stats`` (phase, market time, reset).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from pydantic import ValidationError

from proxy.simulator import Fault, Market, ModelBehaviour, ModelEngine, derive_rng
from tests.helpers import wait_until

from .support import scenario_of

MESSAGES = [{"role": "user", "content": "hello"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def behaviour(**fields: Any) -> ModelBehaviour:
    return ModelBehaviour.model_validate({"warm_ttft": {"median_s": 1.0, "sigma": 0.5}, **fields})


def serve(engine: ModelEngine) -> tuple[str | None, float, Fault | None]:
    """One request through the engine: its phase, TTFT (scaled) and fault."""
    with engine.request():
        draw = engine.draw()
        admission = engine.admit(draw)
        engine.release()
    return draw.phase, admission.ttft_s, draw.fault


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        ({"from_s": 10, "until_s": 10, "cold_chance": 1}, "until_s .* must be above from_s"),
        ({"until_request": 0, "cold_chance": 1}, "greater than or equal to 1"),
        ({"from_request": 5, "until_request": 5, "cold_chance": 1}, "until_request .* above"),
        ({"from_s": 3}, "must override at least one behaviour field"),
        ({"max_concurrency": 2}, "Extra inputs are not permitted"),
        ({"cold_chanse": 0.5}, "Extra inputs are not permitted"),
        ({"error_500_rate": 0.7}, r"phases\.0: .*must not exceed 1"),
    ],
)
def test_bad_phases_are_rejected_with_a_reason(phase: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        behaviour(hang_rate=0.5, phases=[phase])


def test_a_phase_keeps_the_fields_it_does_not_set() -> None:
    b = behaviour(cold_chance=0.1, tokens_per_s=7, phases=[{"name": "cold", "cold_chance": 0.9}])
    ((label, merged),) = b.phase_behaviours()
    assert label == "cold"
    assert merged.cold_chance == 0.9
    assert merged.tokens_per_s == 7 and merged.warm_ttft == b.warm_ttft


# --- the engine's choice, on a fake clock -------------------------------------------------


def test_first_requests_phase_then_base_with_the_same_draws() -> None:
    """A phase changes what the variates mean, not how many: after it, the draws are the
    ones a pair without phases gets."""
    fast_first = behaviour(phases=[{"name": "fast", "until_request": 3, "warm_ttft": {
        "median_s": 0.01, "sigma": 0.0}}])  # fmt: skip
    phased = ModelEngine(fast_first, derive_rng(4, "p", "m"), 1.0, clock=FakeClock())
    plain = ModelEngine(behaviour(), derive_rng(4, "p", "m"), 1.0, clock=FakeClock())
    got = [serve(phased) for _ in range(6)]
    expected = [serve(plain) for _ in range(6)]
    assert [phase for phase, _, _ in got] == ["fast", "fast", "fast", None, None, None]
    assert [ttft for _, ttft, _ in got[:3]] == [0.01] * 3
    assert [ttft for _, ttft, _ in got[3:]] == [ttft for _, ttft, _ in expected[3:]]


def test_time_phases_follow_market_time_and_the_last_listed_wins() -> None:
    clock = FakeClock()
    b = behaviour(
        phases=[
            {"name": "cold", "from_s": 100, "cold_chance": 1.0},
            {"name": "down", "from_s": 150, "until_s": 200, "error_500_rate": 1.0},
        ]
    )
    engine = ModelEngine(b, derive_rng(1, "p", "m"), 0.1, clock=clock)
    assert serve(engine)[0] is None
    clock.now += 10.0  # 100 s of market time at time_scale 0.1
    assert engine.market_time_s() == pytest.approx(100.0)
    phase, ttft, fault = serve(engine)
    assert (phase, fault) == ("cold", None) and ttft > 0.5  # a cold start, 10 s x 0.1
    assert engine.counters.cold_starts == 1
    clock.now += 5.0  # 150 s: both phases hold, the later one wins
    assert serve(engine)[::2] == ("down", Fault.ERROR_500)
    clock.now += 5.0  # 200 s: the outage is over, the cold phase is still on
    assert serve(engine)[0] == "cold"


def test_reset_restarts_market_time_and_request_counts() -> None:
    clock = FakeClock()
    b = behaviour(phases=[{"name": "first-two", "until_request": 2, "refuse": True}])
    engine = ModelEngine(b, derive_rng(1, "p", "m"), 1.0, clock=clock)
    assert [serve(engine)[2] for _ in range(3)] == [Fault.REFUSED, Fault.REFUSED, None]
    clock.now += 30.0
    engine.reset_counters()
    assert engine.market_time_s() == 0.0
    assert engine.active()[0] == "first-two"
    assert serve(engine)[2] is Fault.REFUSED


# --- through HTTP -------------------------------------------------------------------------

# time_scale 0.01: 1 s of market time lasts 10 ms.
PHASED_MODELS = {
    "fast-first": {
        "warm_ttft": {"median_s": 10.0, "sigma": 0.0},
        "tokens_per_s": 1000,
        "phases": [
            {"name": "honeymoon", "until_request": 3, "warm_ttft": {"median_s": 0.5, "sigma": 0}}
        ],
    },
    "outage": {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.0},
        "phases": [{"name": "down", "from_s": 30, "until_s": 60, "error_500_rate": 1.0}],
    },
    "refuses-later": {
        "warm_ttft": {"median_s": 0.5, "sigma": 0.0},
        "phases": [{"name": "gone", "from_request": 1, "refuse": True}],
    },
}


@pytest.fixture
async def phased() -> AsyncIterator[Market]:
    async with Market(scenario_of(PHASED_MODELS, time_scale=0.01)) as running:
        yield running


@pytest.fixture
async def sdk(phased: Market) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=phased.base_url("sim-a"), api_key="key-a", max_retries=0, timeout=10.0
    )
    async with client:
        yield client


async def timed_stream(sdk: openai.AsyncOpenAI, model: str) -> float:
    """Seconds until the first content chunk of a streamed answer."""
    start = time.perf_counter()
    stream = await sdk.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                return time.perf_counter() - start
    raise AssertionError("no content chunk")


def model_stats(market: Market, model: str) -> Any:
    return market.stats("sim-a")["models"][model]


async def test_fast_for_the_first_requests_then_slow(
    phased: Market, sdk: openai.AsyncOpenAI
) -> None:
    fast = [await timed_stream(sdk, "fast-first") for _ in range(3)]
    assert model_stats(phased, "fast-first")["phase"] is None  # the next request: base
    slow = await timed_stream(sdk, "fast-first")
    assert slow >= 0.1  # 10 s x 0.01
    assert max(fast) < slow / 2  # 0.5 s x 0.01 plus loopback
    assert model_stats(phased, "fast-first")["requests"] == 4


async def test_down_for_a_stretch_of_market_time(phased: Market, sdk: openai.AsyncOpenAI) -> None:
    await sdk.chat.completions.create(model="outage", messages=MESSAGES)
    await wait_until(lambda: model_stats(phased, "outage")["phase"] == "down", timeout=5)
    with pytest.raises(openai.InternalServerError):
        await sdk.chat.completions.create(model="outage", messages=MESSAGES)
    await wait_until(lambda: model_stats(phased, "outage")["phase"] is None, timeout=5)
    assert phased.stats("sim-a")["market_time_s"] >= 60
    await sdk.chat.completions.create(model="outage", messages=MESSAGES)
    stats = model_stats(phased, "outage")
    assert (stats["requests"], stats["completed"], stats["errors"]["500"]) == (3, 2, 1)


async def test_a_refusing_pair_closes_the_connection(
    phased: Market, sdk: openai.AsyncOpenAI
) -> None:
    await sdk.chat.completions.create(model="refuses-later", messages=MESSAGES)
    assert model_stats(phased, "refuses-later")["phase"] == "gone"
    with pytest.raises(openai.APIConnectionError):
        await sdk.chat.completions.create(model="refuses-later", messages=MESSAGES)
    stats = model_stats(phased, "refuses-later")
    assert (stats["requests"], stats["completed"], stats["errors"]["refused"]) == (2, 1, 1)


async def test_stats_over_http_show_phases_and_reset_restarts_them(phased: Market) -> None:
    base = phased.base_url("sim-a").removesuffix("/v1")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(base + "/stats") as response:
            stats = await response.json()
        assert stats["models"]["fast-first"]["phase"] == "honeymoon"
        assert stats["models"]["outage"]["phase"] is None
        await wait_until(lambda: model_stats(phased, "outage")["phase"] == "down", timeout=5)
        async with http.post(base + "/stats/reset") as response:
            after = await response.json()
    assert after["market_time_s"] < 30
    assert after["models"]["outage"]["phase"] is None
    assert after["requests"] == 0
