from __future__ import annotations

import time

import orjson
import pytest

from proxy.core.errors import AnswerTooLarge
from proxy.serving.assemble import (
    WholeAnswer,
    assemble_chat,
    assemble_completion,
    assemble_response,
)
from proxy.serving.forward import ModelRewrite
from proxy.upstream.base import UpstreamFailure
from proxy.upstream.sse import RESPONSES, EventSplitter, carries_output, iter_data


def test_splitter_returns_whole_events_across_reads() -> None:
    s = EventSplitter()
    assert s.feed(b'data: {"a"') == b""
    assert s.feed(b':1}\n\ndata: {"b":2}\n') == b'data: {"a":1}\n\n'
    assert s.feed(b"\n") == b'data: {"b":2}\n\n'


def test_splitter_normalises_crlf() -> None:
    s = EventSplitter()
    assert iter_data(s.feed(b"data: 1\r\n\r\ndata: 2\r\n\r\n")) == [b"1", b"2"]


def test_role_only_and_empty_chunks_are_not_output() -> None:
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    assert not carries_output(role)
    assert not carries_output({"choices": [], "usage": {"total_tokens": 3}})
    assert carries_output({"choices": [{"delta": {"content": "hi"}}]})
    assert carries_output({"choices": [{"delta": {"reasoning_content": "hmm"}}]})
    assert carries_output({"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]})
    assert carries_output({"choices": [{"text": "x", "index": 0}]})


def test_model_rewrite_touches_only_the_model_key() -> None:
    rewrite = ModelRewrite("org/Model-X", "model-x")
    content = orjson.dumps({"delta": {"content": '"model":"org/Model-X"'}})
    event = b'data: {"model":"org/Model-X","choices":[' + content + b"]}\n\n"
    out = rewrite(event)
    assert out.startswith(b'data: {"model":"model-x"')
    assert content in out
    assert rewrite(b'{"model": "org/Model-X"}') == b'{"model": "model-x"}'


def test_assemble_chat_merges_choices_tool_calls_logprobs_usage() -> None:
    chunks = [
        {"id": "c1", "created": 1, "model": "m", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}},
            {"index": 1, "delta": {"role": "assistant", "content": ""}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hel"},
                                  "logprobs": {"content": [{"token": "Hel"}]}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"},
                                  "logprobs": {"content": [{"token": "lo"}]}}]},
        {"id": "c1", "choices": [{"index": 1, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{\"a\""}}]}}]},
        {"id": "c1", "choices": [{"index": 1, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ":1}"}}]}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"},
                                 {"index": 1, "delta": {}, "finish_reason": "tool_calls"}]},
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]  # fmt: skip
    out = assemble_chat(chunks)
    first, second = out["choices"]
    assert first["message"] == {"role": "assistant", "content": "Hello"}
    assert first["logprobs"] == {"content": [{"token": "Hel"}, {"token": "lo"}]}
    assert second["message"]["content"] is None
    assert second["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert second["finish_reason"] == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert out["object"] == "chat.completion" and out["id"] == "c1"


def test_responses_output_is_a_non_empty_delta_event() -> None:
    not_output = [
        {"type": "response.created", "response": {"output": []}},
        {"type": "response.in_progress"},
        {"type": "response.output_item.added", "item": {"type": "function_call"}},
        {"type": "response.content_part.added", "part": {"text": ""}},
        {"type": "response.output_text.delta", "delta": ""},
        {"type": "response.completed", "response": {"output_text": "x"}},
    ]
    assert not any(RESPONSES.carries_output(e) for e in not_output)
    for kind in ("output_text", "reasoning_text", "reasoning_summary_text",
                 "function_call_arguments", "refusal"):  # fmt: skip
        assert RESPONSES.carries_output({"type": f"response.{kind}.delta", "delta": "x"})
    assert RESPONSES.is_error({"type": "error", "message": "m"})
    assert RESPONSES.is_error({"type": "response.failed", "response": {"error": {}}})
    assert not RESPONSES.is_error({"type": "response.created", "response": {"error": None}})
    # redaction looks at error events only: a completed response's text stays as it was
    assert RESPONSES.may_hold_error(b'data: {"type": "error","message":"x"}\n\n')
    assert not RESPONSES.may_hold_error(b'data: {"type":"response.completed","error":null}\n\n')


def test_responses_error_event_is_what_the_sdk_raises_on() -> None:
    error = {"message": "broke", "type": "api_error", "param": None, "code": "x"}
    event = RESPONSES.error_event({"error": error})
    assert event.startswith(b"event: error\ndata: ")
    payload = orjson.loads(iter_data(event)[0])
    assert payload["type"] == "error" and payload["message"] == "broke"
    assert payload["error"] == error


def test_assemble_response_takes_the_final_response() -> None:
    final = {"id": "r", "status": "completed", "output": [], "usage": {"total_tokens": 2}}
    events = [{"type": "response.created", "response": {"id": "r", "status": "in_progress"}},
              {"type": "response.output_text.delta", "delta": "x"},
              {"type": "response.completed", "response": final}]  # fmt: skip
    assert assemble_response(events) == final
    assert assemble_response(events[:2]) is None


def test_splitter_is_linear_in_a_large_event_and_refuses_one_past_its_cap() -> None:
    event = b'data: {"x":"' + b"a" * (16 * 1024 * 1024 - 20) + b'"}\n\n'
    reads = [event[i : i + 65536] for i in range(0, len(event), 65536)]
    splitter = EventSplitter()
    started = time.perf_counter()
    out = b"".join(splitter.feed(r) for r in reads)
    assert out == event and splitter.pending == b""
    assert time.perf_counter() - started < 0.5  # a re-scan per read took ~2 s
    small = EventSplitter(max_event_bytes=1000)
    assert small.feed(b"data: " + b"b" * 900) == b""
    with pytest.raises(UpstreamFailure, match="an event of more than 1000 bytes"):
        small.feed(b"b" * 200)


def test_splitter_joins_a_crlf_cut_between_reads() -> None:
    s = EventSplitter()
    assert s.feed(b"data: 1\r\n\r") == b""
    assert s.feed(b"\ndata: 2\r") == b"data: 1\n\n"
    assert s.feed(b"\n\r\n") == b"data: 2\n\n"


def test_a_long_answer_assembles_in_linear_time() -> None:
    """64,000 one-token chunks with logprobs, tool-call arguments and text: each grows in
    place and is joined once (a copy per chunk made this quadratic)."""
    lp = {"token": "t", "logprob": -0.1, "bytes": [116], "top_logprobs": []}
    chat = [{"id": "c", "choices": [{"index": 0, "delta": {"content": "t", "tool_calls": [
        {"index": 0, "function": {"arguments": "a"}}]}, "logprobs": {"content": [lp]}}]}
        for _ in range(64_000)]  # fmt: skip
    text = [{"id": "c", "choices": [{"index": 0, "text": "t", "logprobs": {"tokens": ["t"]}}]}
            for _ in range(64_000)]  # fmt: skip
    started = time.perf_counter()
    out = assemble_chat(chat)
    whole = assemble_completion(text)
    assert time.perf_counter() - started < 2.0  # quadratic: ~10 s
    message = out["choices"][0]["message"]
    assert message["content"] == "t" * 64_000
    assert message["tool_calls"][0]["function"]["arguments"] == "a" * 64_000
    assert len(out["choices"][0]["logprobs"]["content"]) == 64_000
    assert whole["choices"][0]["text"] == "t" * 64_000
    assert len(whole["choices"][0]["logprobs"]["tokens"]) == 64_000


async def test_whole_answer_folds_events_as_they_come_within_its_cap() -> None:
    whole = WholeAnswer("chat", limit=400)
    await whole.feed(b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"he"}}]}\n\n')
    await whole.feed(b'data: {"choices":[{"index":0,"delta":{"content":"y"}}]}\n\n')
    assert whole.answer()["choices"][0]["message"]["content"] == "hey"
    with pytest.raises(AnswerTooLarge, match="passed 400 bytes"):
        await whole.feed(b"data: " + b" " * 400 + b"\n\n")
    with pytest.raises(UpstreamFailure, match="error event"):
        await WholeAnswer("chat").feed(b'data: {"error":{"message":"x"}}\n\n')
    responses = WholeAnswer("responses")
    await responses.feed(b'data: {"type":"response.created"}\n\n')
    with pytest.raises(UpstreamFailure, match="without its response"):
        responses.answer()


def test_the_litellm_adapter_remembers_a_bounded_number_of_dropped_names() -> None:
    from proxy.settings.config import LiteLLMProvider
    from proxy.upstream.litellm_adapter import MAX_DROPPED_NAMES, LiteLLMUpstream

    upstream = LiteLLMUpstream("p", LiteLLMProvider(kind="litellm", litellm_provider="openai"))
    for i in range(50):
        names = {f"{i}-{j}-{'n' * 1000}": 1 for j in range(100)}
        request = upstream._request("/chat/completions", {"model": "m", "messages": [], **names})
        assert set(request) == {"model", "messages", "timeout", "num_retries"}
    seen = upstream._dropped_seen
    assert len(seen) == MAX_DROPPED_NAMES and max(map(len, seen)) <= 64


def test_the_litellm_adapter_sends_extra_fields_as_body_and_config_params_win() -> None:
    """A provider's extra_fields go as extra_body (never a keyword argument litellm would
    read as its own); a client field the config's params also set is the config's (a clash
    used to raise TypeError, recorded as the provider's connect_error); metadata, litellm's
    own argument, never comes from a client."""
    from proxy.settings.config import LiteLLMProvider
    from proxy.upstream.litellm_adapter import LiteLLMUpstream

    config = LiteLLMProvider(
        kind="litellm", litellm_provider="openai", extra_fields=["top_k"],
        params={"temperature": 0.0},
    )  # fmt: skip
    request = LiteLLMUpstream("p", config)._request(
        "/chat/completions",
        {"model": "m", "messages": [], "top_k": 5, "temperature": 1.5, "metadata": {"a": 1},
         "api_base": "http://elsewhere"},
    )  # fmt: skip
    assert request["extra_body"] == {"top_k": 5}
    assert request["temperature"] == 0.0
    assert "metadata" not in request and "api_base" not in request
