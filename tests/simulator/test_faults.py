"""Errors and failures: auth, unknown model, bad JSON, injected faults, clients that leave."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest

from proxy.simulator import Market
from tests.helpers import wait_until

MESSAGES = [{"role": "user", "content": "hello"}]


def assert_openai_error(body: dict[str, object]) -> None:
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]


async def test_wrong_or_missing_key_is_401(market: Market, http: aiohttp.ClientSession) -> None:
    async with openai.AsyncOpenAI(
        base_url=market.base_url("sim-a"), api_key="key-b", max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="org/fast-model", messages=MESSAGES)
    async with http.get(market.base_url("sim-a") + "/models") as response:
        assert response.status == 401
        body = await response.json()
    assert_openai_error(body)
    assert body["error"]["code"] == "invalid_api_key"
    assert market.stats("sim-a")["requests"] == 0


async def test_unknown_model_is_404_naming_the_known_ones(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="deepseek-v4-pro", messages=MESSAGES)
    assert "deepseek-v4-pro" in caught.value.message
    assert "org/fast-model" in caught.value.message
    assert caught.value.code == "model_not_found"


async def test_malformed_json_and_invalid_fields_are_400(
    market: Market, http: aiohttp.ClientSession
) -> None:
    url = market.base_url("sim-a") + "/chat/completions"
    auth = {"Authorization": "Bearer key-a"}
    async with http.post(url, data=b"{not json", headers=auth) as response:
        assert response.status == 400
        body = await response.json()
    assert_openai_error(body)
    assert body["error"]["type"] == "invalid_request_error"
    bad_n = {"model": "org/fast-model", "messages": MESSAGES, "n": 0}
    async with http.post(url, json=bad_n, headers=auth) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "n"
    async with http.post(market.base_url("sim-a") + "/nowhere", headers=auth) as response:
        assert response.status == 404
        assert_openai_error(await response.json())


async def test_injected_429_has_retry_after(
    market: Market, http: aiohttp.ClientSession, client: openai.AsyncOpenAI
) -> None:
    async with http.post(
        market.base_url("sim-a") + "/chat/completions",
        json={"model": "always-429", "messages": MESSAGES},
        headers={"Authorization": "Bearer key-a"},
    ) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "3"  # 300 s * time_scale 0.01
        assert response.headers["retry-after-ms"] == "3000"
        assert_openai_error(await response.json())
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="always-429", messages=MESSAGES, stream=True)
    assert market.stats("sim-a")["models"]["always-429"]["errors"]["429"] == 2


async def test_injected_500(market: Market, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="always-500", messages=MESSAGES)
    stats = market.stats("sim-a")
    assert stats["errors"]["500"] == 1
    assert stats["completed"] == 0


async def test_drop_midstream_makes_the_sdk_raise(
    market: Market, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(
        model="always-drop", messages=MESSAGES, stream=True
    )
    contents: list[str] = []
    with pytest.raises(openai.APIConnectionError) as caught:
        async for chunk in stream:
            contents.append(chunk.choices[0].delta.content or "")
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert len(contents) == 2 and contents[1]  # role chunk, then one content chunk
    stats = market.stats("sim-a")["models"]["always-drop"]
    assert stats["errors"]["drop"] == 1 and stats["completed"] == 0


async def test_drop_without_stream_makes_the_sdk_raise(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="always-drop", messages=MESSAGES)


async def test_hang_then_client_timeout_counts_as_aborted(market: Market) -> None:
    async with openai.AsyncOpenAI(
        base_url=market.base_url("sim-a"), api_key="key-a", max_retries=0, timeout=0.3
    ) as impatient:
        stream = await impatient.chat.completions.create(
            model="always-hang", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APITimeoutError):
            async for _ in stream:
                pass
        await stream.close()
    await wait_until(lambda: market.stats("sim-a")["aborted"] == 1)
    stats = market.stats("sim-a")["models"]["always-hang"]
    assert stats["errors"]["hang"] == 1 and stats["in_flight"] == 0


async def test_client_leaving_midstream_counts_as_aborted(
    market: Market, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(
        model="slow-stream", messages=MESSAGES, stream=True
    )
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    await stream.close()
    await wait_until(lambda: market.stats("sim-a")["aborted"] == 1)
    stats = market.stats("sim-a")
    assert stats["completed"] == 0 and stats["in_flight"] == 0


async def test_client_leaving_during_ttft_counts_as_aborted(
    market: Market, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        market.base_url("sim-a") + "/chat/completions",
        json={"model": "single-slot", "messages": MESSAGES, "stream": True},
        headers={"Authorization": "Bearer key-a"},
    ) as response:
        await response.content.readuntil(b"\n\n")  # the role chunk; TTFT is 50 ms
        response.close()
    await wait_until(lambda: market.stats("sim-a")["aborted"] == 1)


async def test_cold_start_after_idle_is_counted(market: Market, client: openai.AsyncOpenAI) -> None:
    async def ttft_s() -> float:
        started = time.monotonic()
        stream = await client.chat.completions.create(
            model="scales-to-zero", messages=MESSAGES, stream=True, max_tokens=1
        )
        first = None
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - started
        assert first is not None
        return first

    def cold_starts() -> int:
        return market.stats("sim-a")["models"]["scales-to-zero"]["cold_starts"]

    await ttft_s()  # cold or not, depending on how long the fixtures took
    before = cold_starts()
    assert await ttft_s() < 0.1  # back to back: warm
    idle_from = time.monotonic()
    await wait_until(lambda: time.monotonic() - idle_from > 0.08)  # > 5 s * 0.01
    assert await ttft_s() >= 0.1  # the cold start: 10 s * 0.01
    assert await ttft_s() < 0.1  # warm again
    assert cold_starts() == before + 1


async def test_requests_beyond_max_concurrency_wait(
    market: Market, client: openai.AsyncOpenAI
) -> None:
    async def timed() -> float:
        started = time.monotonic()
        await client.chat.completions.create(model="single-slot", messages=MESSAGES, max_tokens=1)
        return time.monotonic() - started

    durations = sorted(await asyncio.gather(timed(), timed(), timed()))
    assert durations[0] >= 0.05  # 5 s * 0.01
    assert durations[2] >= 0.15  # queued behind two others


async def test_stats_over_http_and_reset(market: Market, http: aiohttp.ClientSession) -> None:
    async with openai.AsyncOpenAI(
        base_url=market.base_url("sim-a"), api_key="key-a", max_retries=0
    ) as sdk:
        await sdk.chat.completions.create(model="org/fast-model", messages=MESSAGES)
    base = market.base_url("sim-a").removesuffix("/v1")
    async with http.get(base + "/stats") as response:
        stats = await response.json()
    in_process = dict(market.stats("sim-a"))
    assert 0 <= stats.pop("market_time_s") <= in_process.pop("market_time_s")  # time moves on
    assert stats == in_process
    assert stats["provider"] == "sim-a"
    assert stats["requests"] == stats["completed"] == 1
    assert stats["models"]["org/fast-model"]["completed"] == 1
    assert set(stats["errors"]) == {"500", "429", "drop", "hang", "refused"}
    async with http.post(base + "/stats/reset") as response:
        assert response.status == 200
    assert market.stats("sim-a")["requests"] == 0
