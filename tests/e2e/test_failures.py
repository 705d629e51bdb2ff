"""Failover before the first token, errors after it, client disconnects, bad input.

Who served and how often is asserted from the simulated providers' own counters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.core.domain import Pair
from proxy.simulator import Market
from tests.e2e.conftest import CLIENT_KEY, config_for, policy_file, running_proxy, scenario
from tests.helpers import free_port, wait_until

FAST: dict[str, Any] = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 2000}
NO_CIRCUIT = "defaults:\n  exploration_share: 0.0\n  circuit: {consecutive_errors: 1000}\n"
HI = [{"role": "user", "content": "hi"}]


def market_of(**providers: dict[str, Any]) -> Market:
    return Market(scenario({name: {"m-" + name: b} for name, b in providers.items()}))


def models_for(market: Market, *names: str) -> dict[str, dict[str, str]]:
    return {"m": {name: "m-" + name for name in names}}


async def test_refused_500_and_429_providers_cost_the_client_nothing(tmp_path: Path) -> None:
    market = market_of(
        good=FAST,
        five=FAST | {"error_500_rate": 1.0},
        many=FAST | {"error_429_rate": 1.0, "retry_after_s": 30},
    )
    refused = {"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key": "x"}
    async with market:
        models = {"m": {"good": "m-good", "five": "m-five", "many": "m-many", "refused": "m"}}
        config = config_for(
            market, models, extra_providers={"refused": refused},
            policy_file=policy_file(tmp_path, NO_CIRCUIT + "  failover: {max_attempts: 4}\n"),
        )  # fmt: skip
        async with running_proxy(config) as proxy:
            client = proxy.client()
            served = []
            for _ in range(6):
                response = await client.chat.completions.with_raw_response.create(
                    model="m", messages=HI, stream=True
                )
                served.append(response.headers["x-ttft-router-provider"])
                [c async for c in response.parse()]
            assert served == ["good"] * 6
            # Errors are not latency samples: failing pairs stay least measured, go first.
            five = market.stats("five")["requests"]
            assert five >= 1
            assert market.stats("many")["requests"] == 1  # then rate-limited for 30 s
            board = proxy.services.scoreboard
            await wait_until(lambda: Pair("m", "refused") in board.snapshot, timeout=5)
            await wait_until(
                lambda: board.snapshot[Pair("m", "five")].n_attempts == five, timeout=5
            )
            assert board.snapshot[Pair("m", "five")].error_rate == 1.0
            assert board.snapshot[Pair("m", "refused")].error_rate == 1.0
            assert board.snapshot[Pair("m", "good")].error_rate == 0.0
            async with proxy.admin() as admin:
                explain = (await admin.get("/admin/explain", params={"model": "m"})).json()
                decisions = (await admin.get("/admin/decisions", params={"limit": 6})).json()
            excluded = {c["provider"]: c["excluded_because"] for c in explain["candidates"]}
            assert excluded["many"].startswith("rate-limited (429) for another")
            outcomes = {a["outcome"] for d in decisions["decisions"] for a in d["attempts"]}
            assert {"http_5xx", "connect_error", "ok"} <= outcomes


async def test_every_candidate_429_gives_429_with_retry_after() -> None:
    market = market_of(many=FAST | {"error_429_rate": 1.0, "retry_after_s": 7})
    async with market, running_proxy(config_for(market, models_for(market, "many"))) as proxy:
        with pytest.raises(openai.RateLimitError) as info:
            await proxy.client().chat.completions.create(model="m", messages=HI)
        assert info.value.response.headers["retry-after"] == "7"
        assert info.value.code == "rate_limit_exceeded"
        # The pair is now resting: the next request is refused at once, still with a wait.
        with pytest.raises(openai.RateLimitError) as again:
            await proxy.client().chat.completions.create(model="m", messages=HI)
        assert int(again.value.response.headers["retry-after"]) >= 1
        assert market.stats("many")["requests"] == 1


async def test_failure_after_first_token_ends_stream_with_an_error_event() -> None:
    market = market_of(drop=FAST | {"drop_midstream_rate": 1.0})
    async with market, running_proxy(config_for(market, models_for(market, "drop"))) as proxy:
        stream = await proxy.client().chat.completions.create(
            model="m", messages=HI, stream=True, max_tokens=50
        )
        got = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                got.append(chunk)
        assert got and "broke after the first token" in info.value.message
        board = proxy.services.scoreboard
        await wait_until(lambda: Pair("m", "drop") in board.snapshot, timeout=5)
        score = board.snapshot[Pair("m", "drop")]
        assert score.n == 1 and score.error_rate == 1.0  # a real TTFT, and a failed request


async def test_client_disconnect_cancels_the_upstream_request() -> None:
    slow = {"warm_ttft": {"median_s": 30.0, "sigma": 0.0}}
    market = market_of(slow=slow)
    async with market, running_proxy(config_for(market, models_for(market, "slow"))) as proxy:
        body = {"model": "m", "messages": HI, "stream": True}
        async with httpx.AsyncClient(base_url=proxy.url, timeout=60) as http:
            request = asyncio.create_task(
                http.post("/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"})
            )  # fmt: skip
            await wait_until(lambda: market.stats("slow")["in_flight"] == 1, timeout=5)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        loop = asyncio.get_running_loop()
        gone = loop.time()
        await wait_until(lambda: market.stats("slow")["aborted"] == 1, timeout=1.0)
        assert loop.time() - gone < 1.0
        board = proxy.services.scoreboard
        await wait_until(lambda: Pair("m", "slow") in board.snapshot, timeout=5)
        score = board.snapshot[Pair("m", "slow")]
        assert score.n_censored == 1 and score.error_rate == 0.0  # censored, not an error


async def test_bad_requests_are_openai_shaped_and_disturb_nothing_in_flight() -> None:
    slowish = {"warm_ttft": {"median_s": 0.3, "sigma": 0.0}, "tokens_per_s": 40}
    async with market_of(p=slowish) as market:
        config = config_for(market, models_for(market, "p"), server={"max_body_bytes": 10_000})
        async with running_proxy(config) as proxy:
            await _bad_requests_beside_a_stream(market, proxy)


async def _bad_requests_beside_a_stream(market: Market, proxy: Any) -> None:
    in_flight = asyncio.create_task(_collect(proxy.client(), max_tokens=12))
    await wait_until(lambda: market.stats("p")["in_flight"] == 1, timeout=5)
    async with httpx.AsyncClient(base_url=proxy.url) as http:
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        cases = {
            401: await http.post("/v1/chat/completions", json={"model": "m"},
                                 headers={"Authorization": "Bearer wrong"}),
            404: await http.post("/v1/chat/completions", headers=auth,
                                 json={"model": "nope", "messages": HI}),
            400: await http.post("/v1/chat/completions", headers=auth,
                                 content=b'{"model": "m", "messages": [}'),
            413: await http.post("/v1/chat/completions", headers=auth,
                                 json={"model": "m", "messages": HI, "x": "y" * 20_000}),
        }  # fmt: skip
        missing = await http.post("/v1/chat/completions", headers=auth, json={"model": "m"})
    for status, response in cases.items():
        assert response.status_code == status
        error = response.json()["error"]
        # OpenAI's four fields, plus the request id to quote (docs/admin-api.md)
        assert set(error) == {"message", "type", "param", "code", "request_id"}
        assert error["message"] and error["request_id"] == response.headers["x-request-id"]
    assert "model 'nope' is not configured (known: m)" in cases[404].json()["error"]["message"]
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
    assert len((await in_flight).split()) == 12  # the stream in flight arrived whole
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="bad").models.list()
    with pytest.raises(openai.NotFoundError):
        await proxy.client().chat.completions.create(model="nope", messages=HI)


async def _collect(client: openai.AsyncOpenAI, max_tokens: int) -> str:
    stream = await client.chat.completions.create(
        model="m", messages=HI, stream=True, max_tokens=max_tokens
    )
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
