"""The simulator's Responses API, through the official SDK: the stream's events in OpenAI's
order and shape, the whole answer equal to the stream's final response, a forced function
call, and a provider configured without it answering 404."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from proxy.simulator import Market, Scenario

TOOL = {"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}  # fmt: skip


async def test_stream_events_in_order_then_the_whole_response(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="org/fast-model", input="hello there", stream=True)
    events = [e async for e in stream]
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * len(deltas),
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.status == "completed" and final.model == "org/fast-model"
    assert final.output_text == "".join(d.delta for d in deltas)
    assert final.usage is not None and final.usage.output_tokens == len(deltas) == 16
    whole = await client.responses.create(model="org/fast-model", input="hello there")
    assert whole.output_text == final.output_text
    assert whole.usage == final.usage


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}])
async def test_forced_function_call_streams_its_arguments(
    client: openai.AsyncOpenAI, choice: Any
) -> None:
    params: dict[str, Any] = {"model": "org/fast-model", "input": "weather in Paris",
                              "tools": [TOOL], "tool_choice": choice}  # fmt: skip
    stream = await client.responses.create(**params, stream=True)
    events = [e async for e in stream]
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert pieces and not any(e.type == "response.output_text.delta" for e in events)
    item = events[-1].response.output[0]  # type: ignore[union-attr]
    assert item.type == "function_call" and item.name == "get_weather"
    assert item.arguments == "".join(pieces) and "city" in item.arguments
    whole = await client.responses.create(**params)
    assert whole.output[0].arguments == item.arguments  # type: ignore[union-attr]


async def test_max_output_tokens_ends_incomplete(client: openai.AsyncOpenAI) -> None:
    whole = await client.responses.create(model="org/fast-model", input="hi", max_output_tokens=3)
    assert whole.status == "incomplete" and len(whole.output_text.split()) == 3
    assert whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"


async def test_a_provider_without_the_responses_api_answers_404() -> None:
    scenario = Scenario.model_validate({"providers": {"chat-only": {
        "api_key": "k", "responses": False,
        "models": {"m": {"warm_ttft": {"median_s": 0.01}}}}}})  # fmt: skip
    async with Market(scenario) as market:
        assert market.provider_configs()["chat-only"]["responses"] is False
        client = openai.AsyncOpenAI(base_url=market.base_url("chat-only"), api_key="k",
                                    max_retries=0)  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="m", input="hi")
        chat = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.choices[0].message.content
