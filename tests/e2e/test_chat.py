"""Chat and text completions through the proxy arrive intact, and each yields a TTFT sample."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from proxy.core.domain import Pair
from proxy.simulator import Market
from tests.e2e.conftest import config_for, running_proxy, scenario
from tests.helpers import wait_until

FAST = {"warm_ttft": {"median_s": 0.01, "sigma": 0.1}, "tokens_per_s": 2000}
MODELS = {"chat-model": {"solo": "org/Chat-Model-1"}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip


def solo_market() -> Market:
    return Market(scenario({"solo": {"org/Chat-Model-1": FAST}}))


def samples_of(proxy: Any, pair: Pair) -> int:
    score = proxy.services.scoreboard.snapshot.get(pair)
    return score.n if score else 0


def has_n(proxy: Any, pair: Pair, n: int) -> bool:
    return samples_of(proxy, pair) == n


async def test_stream_arrives_intact_with_usage_and_records_a_sample() -> None:
    async with solo_market() as market, running_proxy(config_for(market, MODELS)) as proxy:
        client = proxy.client()
        stream = await client.chat.completions.create(
            model="chat-model", messages=[{"role": "user", "content": "hello there"}],
            stream=True, max_tokens=8, stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = [c async for c in stream]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(content.split()) == 8
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 8
        assert {c.model for c in chunks} == {"chat-model"}  # public name, not the provider's
        no_usage = await client.chat.completions.create(
            model="chat-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert all(c.usage is None for c in [c async for c in no_usage])
        await wait_until(lambda: has_n(proxy, Pair("chat-model", "solo"), 2), timeout=5)
        score = proxy.services.scoreboard.snapshot[Pair("chat-model", "solo")]
        assert score.n == 2 and score.median is not None and score.median < 1.0


async def test_non_stream_is_assembled_and_equals_upstream_answer() -> None:
    async with solo_market() as market, running_proxy(config_for(market, MODELS)) as proxy:
        request: dict[str, Any] = {
            "messages": [{"role": "user", "content": "what is the weather in Paris"}],
            "max_tokens": 6, "n": 2, "logprobs": True, "top_logprobs": 2, "seed": 3,
        }  # fmt: skip
        direct = openai.AsyncOpenAI(base_url=market.base_url("solo"), api_key="key-solo")
        upstream = await direct.chat.completions.create(model="org/Chat-Model-1", **request)
        through = await proxy.client().chat.completions.with_raw_response.create(
            model="chat-model", **request
        )
        assert through.headers["x-ttft-router-provider"] == "solo"
        assert through.headers["x-ttft-router-decision-id"]
        answer = through.parse()
        assert answer.model == "chat-model"
        assert [c.model_dump() for c in answer.choices] == [
            c.model_dump() for c in upstream.choices
        ]
        assert answer.usage == upstream.usage
        tools = {"tools": TOOLS, "tool_choice": "required"}
        up_tool = await direct.chat.completions.create(model="org/Chat-Model-1", **request, **tools)
        via_tool = await proxy.client().chat.completions.create(
            model="chat-model", **request, **tools
        )
        assert via_tool.choices[0].message.tool_calls
        assert [c.model_dump() for c in via_tool.choices] == [
            c.model_dump() for c in up_tool.choices
        ]
        stats = market.stats("solo")
        assert stats["requests"] == 4
        await wait_until(lambda: has_n(proxy, Pair("chat-model", "solo"), 2), timeout=5)


async def test_streamed_tool_call_deltas_keep_their_ids() -> None:
    async with solo_market() as market, running_proxy(config_for(market, MODELS)) as proxy:
        stream = await proxy.client().chat.completions.create(
            model="chat-model", messages=[{"role": "user", "content": "weather?"}],
            tools=TOOLS, tool_choice="required", stream=True,
        )  # fmt: skip
        deltas = [
            tc for c in [c async for c in stream] if c.choices
            for tc in (c.choices[0].delta.tool_calls or [])
        ]  # fmt: skip
        assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
        arguments = "".join((d.function.arguments or "") for d in deltas if d.function)
        assert arguments.startswith("{")


async def test_text_completions_stream_and_whole() -> None:
    async with solo_market() as market, running_proxy(config_for(market, MODELS)) as proxy:
        client = proxy.client()
        whole = await client.completions.create(model="chat-model", prompt="say", max_tokens=5)
        assert whole.model == "chat-model" and len(whole.choices[0].text.split()) == 5
        stream = await client.completions.create(
            model="chat-model", prompt="say", max_tokens=5, stream=True
        )
        text = "".join(c.choices[0].text for c in [c async for c in stream] if c.choices)
        assert text == whole.choices[0].text


async def test_embeddings_and_models_list() -> None:
    async with solo_market() as market, running_proxy(config_for(market, MODELS)) as proxy:
        client = proxy.client()
        result = await client.embeddings.create(model="chat-model", input=["a", "b"])
        assert len(result.data) == 2 and result.model == "chat-model"
        models = await client.models.list()
        assert [m.id for m in models.data] == ["chat-model"]
        async with proxy.admin() as http:
            ready = await wait_until(lambda: _ready(http), timeout=5)
            assert ready == {"status": "ready"}
            metrics = (await http.get("/metrics")).text
            assert (
                'ttft_router_attempts_total{model="chat-model",outcome="ok",provider="solo"}'
                in metrics
            )


async def _ready(http: httpx.AsyncClient) -> Any:
    response = await http.get("/readyz")
    return response.json() if response.status_code == 200 else None
