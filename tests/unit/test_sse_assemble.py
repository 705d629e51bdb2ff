from __future__ import annotations

import orjson

from proxy.serving.assemble import assemble_chat, assemble_response
from proxy.serving.forward import ModelRewrite
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
