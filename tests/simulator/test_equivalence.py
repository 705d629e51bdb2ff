"""The non-stream answer equals the stream of the same request, assembled here."""

from __future__ import annotations

from typing import Any

import openai
import pytest

MESSAGES = [{"role": "user", "content": "Tell me about the weather in Lisbon today."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
        },
    },
}
OTHER_TOOL = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}


def assemble_chat(chunks: list[Any]) -> dict[str, Any]:
    """Rebuild a chat.completion (as a dict) from its stream chunks."""
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for c in chunk.choices:
            into = choices.setdefault(
                c.index, {"content": "", "tool_calls": {}, "logprobs": None, "finish": None}
            )
            into["content"] += c.delta.content or ""
            for call in c.delta.tool_calls or []:
                entry = into["tool_calls"].setdefault(call.index, {"arguments": ""})
                if call.id:
                    entry.update(id=call.id, type=call.type, name=call.function.name)
                entry["arguments"] += call.function.arguments or ""
            if c.logprobs is not None and c.logprobs.content is not None:
                into["logprobs"] = (into["logprobs"] or []) + [
                    lp.model_dump() for lp in c.logprobs.content
                ]
            if c.finish_reason is not None:
                into["finish"] = c.finish_reason
    rendered = []
    for index in sorted(choices):
        c = choices[index]
        calls = [
            {"id": t["id"], "type": t["type"], "name": t["name"], "arguments": t["arguments"]}
            for _, t in sorted(c["tool_calls"].items())
        ]
        rendered.append(
            {
                "index": index,
                "content": None if calls else c["content"],
                "tool_calls": calls or None,
                "logprobs": c["logprobs"],
                "finish_reason": c["finish"],
            }
        )
    return {"choices": rendered, "usage": usage}


def flatten_chat(answer: Any) -> dict[str, Any]:
    rendered = []
    for c in answer.choices:
        calls = None
        if c.message.tool_calls:
            calls = [
                {
                    "id": t.id,
                    "type": t.type,
                    "name": t.function.name,
                    "arguments": t.function.arguments,
                }
                for t in c.message.tool_calls
            ]
        logprobs = None
        if c.logprobs is not None and c.logprobs.content is not None:
            logprobs = [lp.model_dump() for lp in c.logprobs.content]
        rendered.append(
            {
                "index": c.index,
                "content": c.message.content,
                "tool_calls": calls,
                "logprobs": logprobs,
                "finish_reason": c.finish_reason,
            }
        )
    return {"choices": rendered, "usage": answer.usage.model_dump()}


CHAT_CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "n_choices": {"n": 3, "max_tokens": 7},
    "logprobs": {"logprobs": True, "top_logprobs": 3, "n": 2},
    "logprobs_without_top": {"logprobs": True, "max_tokens": 4},
    "tool_required": {"tools": [WEATHER_TOOL, OTHER_TOOL], "tool_choice": "required", "n": 2},
    "tool_named": {
        "tools": [OTHER_TOOL, WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "tool_auto_answers_text": {"tools": [WEATHER_TOOL], "tool_choice": "auto"},
    "stop": {"stop": ["e"], "max_tokens": 20},
}


@pytest.mark.parametrize("case", list(CHAT_CASES))
async def test_chat_single_equals_assembled_stream(client: openai.AsyncOpenAI, case: str) -> None:
    params = {"model": "org/fast-model", "messages": MESSAGES, **CHAT_CASES[case]}
    single = await client.chat.completions.create(**params)
    stream = await client.chat.completions.create(
        **params, stream=True, stream_options={"include_usage": True}
    )
    assembled = assemble_chat([chunk async for chunk in stream])
    expected = flatten_chat(single)
    assert assembled == expected
    first = expected["choices"][0]
    assert len(expected["choices"]) == params.get("n", 1)
    assert (first["logprobs"] is not None) == ("logprobs" in params)
    assert (first["tool_calls"] is not None) == (params.get("tool_choice", "auto") != "auto")


async def test_tool_call_stream_shape(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="org/fast-model",
        messages=MESSAGES,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        stream=True,
    )
    deltas = [c.choices[0].delta for c in [chunk async for chunk in stream] if c.choices]
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    first, rest = calls[0], calls[1:]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function.name == "get_weather" and first.function.arguments == ""
    assert len(rest) > 1
    assert all(c.id is None and c.function.name is None and c.function.arguments for c in rest)


def flatten_legacy(answer: Any) -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": c.index,
                "text": c.text,
                "logprobs": c.logprobs.model_dump() if c.logprobs is not None else None,
                "finish_reason": c.finish_reason,
            }
            for c in answer.choices
        ],
        "usage": answer.usage.model_dump(),
    }


def assemble_legacy(chunks: list[Any]) -> dict[str, Any]:
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for c in chunk.choices:
            into = choices.setdefault(
                c.index, {"index": c.index, "text": "", "logprobs": None, "finish_reason": None}
            )
            into["text"] += c.text
            if c.logprobs is not None:
                merged = into["logprobs"] or {
                    "tokens": [],
                    "token_logprobs": [],
                    "top_logprobs": None,
                    "text_offset": [],
                }
                for key in ("tokens", "token_logprobs", "text_offset"):
                    merged[key] = merged[key] + getattr(c.logprobs, key)
                if c.logprobs.top_logprobs is not None:
                    merged["top_logprobs"] = (
                        merged["top_logprobs"] or []
                    ) + c.logprobs.top_logprobs
                into["logprobs"] = merged
            if c.finish_reason is not None:
                into["finish_reason"] = c.finish_reason
    return {"choices": [choices[i] for i in sorted(choices)], "usage": usage}


LEGACY_CASES: dict[str, dict[str, Any]] = {
    "plain": {"prompt": "The sea is"},
    "n_and_prompts": {"prompt": ["The sea is", "A mountain"], "n": 2, "max_tokens": 5},
    "logprobs": {"prompt": "The sea is", "logprobs": 2, "max_tokens": 6},
    "logprobs_zero": {"prompt": "The sea is", "logprobs": 0, "max_tokens": 3},
}


@pytest.mark.parametrize("case", list(LEGACY_CASES))
async def test_legacy_single_equals_assembled_stream(client: openai.AsyncOpenAI, case: str) -> None:
    params = {"model": "org/fast-model", **LEGACY_CASES[case]}
    single = await client.completions.create(**params)
    stream = await client.completions.create(
        **params, stream=True, stream_options={"include_usage": True}
    )
    assembled = assemble_legacy([chunk async for chunk in stream])
    expected = flatten_legacy(single)
    assert assembled == expected
    assert (expected["choices"][0]["logprobs"] is not None) == ("logprobs" in params)


async def test_same_request_same_answer_other_prompt_other_answer(
    client: openai.AsyncOpenAI,
) -> None:
    async def text(prompt: str) -> str | None:
        answer = await client.chat.completions.create(
            model="org/fast-model", messages=[{"role": "user", "content": prompt}]
        )
        return answer.choices[0].message.content

    assert await text("hello") == await text("hello")
    assert await text("hello") != await text("goodbye")
