from __future__ import annotations

import orjson

from proxy.assemble import assemble_chat
from proxy.forward import ModelRewrite
from proxy.upstream.sse import EventSplitter, carries_output, iter_data


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
