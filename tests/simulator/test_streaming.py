"""The OpenAI protocol as the official SDK sees it: stream shape, usage, other endpoints."""

from __future__ import annotations

import time

import aiohttp
import openai
import pytest

from proxy.simulator import Market

MESSAGES = [{"role": "user", "content": "Say something about rivers."}]


async def test_stream_starts_with_role_only_chunk_then_content(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="org/fast-model", messages=MESSAGES, stream=True, max_tokens=5
    )
    chunks = [chunk async for chunk in stream]
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    assert not first.choices[0].delta.content
    contents = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(contents) == 5 and all(contents)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.id.startswith("chatcmpl-sim-a-")
        assert chunk.model == "org/fast-model"
        assert chunk.system_fingerprint
        assert chunk.created > 0


async def test_usage_chunk_only_when_asked(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="org/fast-model",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 4
    assert last.usage.completion_tokens == 16
    assert last.usage.total_tokens == 20
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


async def test_role_chunk_comes_at_once_content_after_ttft(
    market: Market, http: aiohttp.ClientSession
) -> None:
    """``single-slot`` has a constant 50 ms TTFT; the role chunk must not wait for it."""
    started = time.monotonic()
    async with http.post(
        market.base_url("sim-a") + "/chat/completions",
        json={"model": "single-slot", "messages": MESSAGES, "stream": True, "max_tokens": 1},
        headers={"Authorization": "Bearer key-a"},
    ) as response:
        role = await response.content.readuntil(b"\n\n")
        role_s = time.monotonic() - started
        content = await response.content.readuntil(b"\n\n")
        content_s = time.monotonic() - started
        await response.read()
    assert b'"role":"assistant"' in role and b'"content":""' in role
    assert b'"content":"' in content and b'"content":""' not in content
    assert content_s >= 0.05  # 5 s * 0.01
    assert content_s - role_s >= 0.04  # the role chunk did not wait for the TTFT


async def test_raw_sse_framing_ends_with_done(market: Market, http: aiohttp.ClientSession) -> None:
    async with http.post(
        market.base_url("sim-a") + "/chat/completions",
        json={"model": "org/fast-model", "messages": MESSAGES, "stream": True, "max_tokens": 2},
        headers={"Authorization": "Bearer key-a"},
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = await response.read()
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    assert all(event.startswith(b"data: {") for event in events[:-2])
    assert b'"delta":{"role":"assistant","content":""}' in events[0]
    assert b": " not in events[1].removeprefix(b"data: ")  # compact JSON


async def test_each_provider_has_its_own_key_and_model_ids(market: Market) -> None:
    async with openai.AsyncOpenAI(
        base_url=market.base_url("sim-b"), api_key=market.api_key("sim-b"), max_retries=0
    ) as sdk:
        models = await sdk.models.list()
        assert [m.id for m in models.data] == ["b/own-id"]
        answer = await sdk.chat.completions.create(model="b/own-id", messages=MESSAGES)
        assert answer.id.startswith("chatcmpl-sim-b-")
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(model="org/fast-model", messages=MESSAGES)
    assert market.base_url("sim-a") != market.base_url("sim-b")
    assert market.stats("sim-b")["completed"] == 1


async def test_legacy_completion_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(
        model="org/fast-model",
        prompt="Once upon a time",
        stream=True,
        max_tokens=4,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].text == ""
    texts = [c.choices[0].text for c in chunks[1:5]]
    assert all(texts)
    assert chunks[5].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.object == "text_completion" for c in chunks)


async def test_embeddings_are_deterministic_in_both_encodings(client: openai.AsyncOpenAI) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it.
    as_base64 = await client.embeddings.create(model="org/fast-model", input=["a cat", "a dog"])
    as_float = await client.embeddings.create(
        model="org/fast-model", input=["a cat", "a dog"], encoding_format="float"
    )
    assert [d.index for d in as_float.data] == [0, 1]
    assert len(as_float.data[0].embedding) == 16
    assert as_float.data[0].embedding != as_float.data[1].embedding
    for encoded, plain in zip(as_base64.data, as_float.data, strict=True):
        assert encoded.embedding == pytest.approx(plain.embedding, abs=1e-6)
    sized = await client.embeddings.create(
        model="org/fast-model", input="a cat", dimensions=4, encoding_format="float"
    )
    assert len(sized.data[0].embedding) == 4
    assert as_float.usage.prompt_tokens == 4


async def test_stop_cuts_the_text(client: openai.AsyncOpenAI) -> None:
    full = await client.chat.completions.create(model="org/fast-model", messages=MESSAGES)
    text = full.choices[0].message.content
    assert text is not None
    third_word = text.split()[2]
    cut = await client.chat.completions.create(
        model="org/fast-model", messages=MESSAGES, stop=[" " + third_word]
    )
    assert cut.choices[0].message.content == text[: text.index(" " + third_word)]
    assert cut.choices[0].finish_reason == "stop"


async def test_sampling_parameters_are_accepted(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="org/fast-model",
        messages=MESSAGES,
        temperature=0,
        seed=5,
        top_p=0.9,
        extra_body={"some_vendor_flag": True},
    )
    assert answer.choices[0].message.content
