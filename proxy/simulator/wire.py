"""OpenAI wire shapes: chat, legacy completion and Responses API bodies, stream chunks and
events, SSE frames, errors.

Owns how a list of ``output.Choice`` becomes either one JSON response or the frames of a
stream, so that assembling the stream gives back the response. Knows nothing of timing or
of aiohttp: ``server`` decides when each frame is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.simulator.output import Choice, TokenLogprob, ToolCall

DONE_FRAME = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE event carrying compact JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    """OpenAI's error shape."""
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


@dataclass(frozen=True)
class Frames:
    """A stream: ``head`` at once, then each of ``steps`` one token interval apart, then ``tail``.

    ``steps`` are the frames carrying output; ``tail`` holds the finish chunks, the usage chunk
    if asked, and ``[DONE]``.
    """

    head: bytes
    steps: tuple[bytes, ...]
    tail: bytes


@dataclass(frozen=True)
class Envelope:
    """Fields every body and chunk of one answer share."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    include_usage: bool = False


def usage(prompt_tokens: int, choices: Sequence[Choice]) -> dict[str, int]:
    """Usage of an answer: prompt tokens given, completion tokens summed over choices."""
    completion = sum(choice.completion_tokens for choice in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def steps_of(
    per_choice: Sequence[Sequence[dict[str, Any]]], render: Callable[[dict[str, Any]], bytes]
) -> tuple[bytes, ...]:
    """Interleave per-choice pieces into steps: step k holds piece k of every choice."""
    longest = max((len(pieces) for pieces in per_choice), default=0)
    return tuple(
        b"".join(render(pieces[k]) for pieces in per_choice if k < len(pieces))
        for k in range(longest)
    )


# --- chat -------------------------------------------------------------------------------


def _chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": list(e.token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in e.top
                ],
            }
            for e in entries
        ],
        "refusal": None,
    }


def _chat_tool_calls(call: ToolCall) -> list[dict[str, Any]]:
    function = {"name": call.name, "arguments": call.arguments}
    return [{"id": call.id, "type": "function", "function": function}]


def chat_response(env: Envelope, choices: Sequence[Choice], prompt_tokens: int) -> bytes:
    """A whole ``chat.completion``."""
    rendered = []
    for c in choices:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if c.tool_call is not None:
            message["tool_calls"] = _chat_tool_calls(c.tool_call)
        else:
            message["content"] = c.text
        logprobs = _chat_logprobs(c.logprobs) if c.logprobs is not None else None
        rendered.append(
            {
                "index": c.index,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": c.finish_reason,
            }
        )
    body = _envelope(env, "chat.completion", rendered)
    return orjson.dumps({**body, "usage": usage(prompt_tokens, choices)})


def _envelope(env: Envelope, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """The fields every answer and chunk of one response share; `kind` is its "object"."""
    return {
        "id": env.id,
        "object": kind,
        "created": env.created,
        "model": env.model,
        "system_fingerprint": env.system_fingerprint,
        "choices": choices,
    }


def _chunk(env: Envelope, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    chunk = _envelope(env, kind, choices)
    if env.include_usage:
        chunk["usage"] = None
    return chunk


def _chat_chunk(env: Envelope, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return _chunk(env, "chat.completion.chunk", choices)


def _chat_choice(
    index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def _chat_pieces(c: Choice) -> list[dict[str, Any]]:
    if c.tool_call is not None:
        call = c.tool_call
        first = {
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        rest = [{"index": 0, "function": {"arguments": piece}} for piece in call.argument_pieces]
        return [_chat_choice(c.index, {"tool_calls": [tc]}) for tc in (first, *rest)]
    return [
        _chat_choice(
            c.index,
            {"content": token},
            _chat_logprobs([c.logprobs[k]]) if c.logprobs is not None else None,
        )
        for k, token in enumerate(c.tokens)
    ]


def chat_frames(env: Envelope, choices: Sequence[Choice], prompt_tokens: int) -> Frames:
    """A ``chat.completion.chunk`` stream; the head is one role-only chunk per choice."""

    def render(choice: dict[str, Any]) -> bytes:
        return sse(_chat_chunk(env, [choice]))

    head = b"".join(
        render(_chat_choice(c.index, {"role": "assistant", "content": ""})) for c in choices
    )
    steps = steps_of([_chat_pieces(c) for c in choices], render)
    tail = b"".join(render(_chat_choice(c.index, {}, None, c.finish_reason)) for c in choices)
    if env.include_usage:
        final = {**_chat_chunk(env, []), "usage": usage(prompt_tokens, choices)}
        tail += sse(final)
    return Frames(head, steps, tail + DONE_FRAME)


# --- legacy completions -----------------------------------------------------------------


def _legacy_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [dict(e.top) for e in entries] if any(e.top for e in entries) else None,
        "text_offset": offsets,
    }


def completion_response(env: Envelope, choices: Sequence[Choice], prompt_tokens: int) -> bytes:
    """A whole legacy ``text_completion``."""
    rendered = [
        {
            "text": c.text,
            "index": c.index,
            "logprobs": _legacy_logprobs(c.logprobs, 0) if c.logprobs is not None else None,
            "finish_reason": c.finish_reason,
        }
        for c in choices
    ]
    body = _envelope(env, "text_completion", rendered)
    return orjson.dumps({**body, "usage": usage(prompt_tokens, choices)})


def _completion_chunk(env: Envelope, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return _chunk(env, "text_completion", choices)


def _completion_pieces(c: Choice) -> list[dict[str, Any]]:
    pieces = []
    offset = 0
    for k, token in enumerate(c.tokens):
        logprobs = None
        if c.logprobs is not None:
            logprobs = _legacy_logprobs([c.logprobs[k]], offset)
        pieces.append(
            {"text": token, "index": c.index, "logprobs": logprobs, "finish_reason": None}
        )
        offset += len(token)
    return pieces


def completion_frames(env: Envelope, choices: Sequence[Choice], prompt_tokens: int) -> Frames:
    """A legacy completion stream; the head is one empty-text chunk per choice."""

    def render(choice: dict[str, Any]) -> bytes:
        return sse(_completion_chunk(env, [choice]))

    def empty(c: Choice, finish: str | None) -> bytes:
        return render({"text": "", "index": c.index, "logprobs": None, "finish_reason": finish})

    head = b"".join(empty(c, None) for c in choices)
    steps = steps_of([_completion_pieces(c) for c in choices], render)
    tail = b"".join(empty(c, c.finish_reason) for c in choices)
    if env.include_usage:
        tail += sse({**_completion_chunk(env, []), "usage": usage(prompt_tokens, choices)})
    return Frames(head, steps, tail + DONE_FRAME)


# --- the Responses API ------------------------------------------------------------------


def typed_sse(event: dict[str, Any]) -> bytes:
    """One Responses API event: its type on the ``event:`` line, the JSON on ``data:``."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _response_usage(prompt_tokens: int, choice: Choice) -> dict[str, Any]:
    output = choice.completion_tokens
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + output,
    }


def _response_object(
    env: Envelope, status: str, output: list[dict[str, Any]], usage_: dict[str, Any] | None
) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": env.id, "object": "response", "created_at": env.created, "status": status,
        "background": False, "error": None, "incomplete_details": incomplete,
        "instructions": None, "max_output_tokens": None, "model": env.model, "output": output,
        "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": False, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage_, "user": None, "metadata": {},
    }  # fmt: skip


def _output_item(env: Envelope, choice: Choice, done: bool) -> dict[str, Any]:
    status = "completed" if done else "in_progress"
    call = choice.tool_call
    if call is not None:
        return {
            "id": f"fc_{env.id}", "type": "function_call", "status": status,
            "call_id": call.id, "name": call.name, "arguments": call.arguments if done else "",
        }  # fmt: skip
    content = [_output_text(choice.text)] if done else []
    return {
        "id": f"msg_{env.id}", "type": "message", "status": status, "role": "assistant",
        "content": content,
    }  # fmt: skip


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _final_status(choice: Choice) -> str:
    return "incomplete" if choice.finish_reason == "length" else "completed"


def responses_response(env: Envelope, choice: Choice, prompt_tokens: int) -> bytes:
    """A whole ``response`` object (stream=false)."""
    output = [_output_item(env, choice, done=True)]
    usage_ = _response_usage(prompt_tokens, choice)
    return orjson.dumps(_response_object(env, _final_status(choice), output, usage_))


def responses_frames(env: Envelope, choice: Choice, prompt_tokens: int) -> Frames:
    """A Responses API event stream: ``response.created``, ``response.in_progress`` and the
    item/part announcements at once (no output yet), one ``*.delta`` event per token (or
    argument piece), then the ``*.done`` events and ``response.completed`` (or
    ``response.incomplete`` at max_output_tokens) with the whole response and its usage."""
    item = _output_item(env, choice, done=False)
    where = {"item_id": item["id"], "output_index": 0}
    head: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response_object(env, "in_progress", [], None)},
        {"type": "response.in_progress",
         "response": _response_object(env, "in_progress", [], None)},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
    ]  # fmt: skip
    tail: list[dict[str, Any]] = []
    if choice.tool_call is not None:
        steps = [
            {"type": "response.function_call_arguments.delta", **where, "delta": piece}
            for piece in choice.tool_call.argument_pieces
        ]
        tail.append({"type": "response.function_call_arguments.done", **where,
                     "arguments": choice.tool_call.arguments})  # fmt: skip
    else:
        part = {**where, "content_index": 0}
        head.append({"type": "response.content_part.added", **part, "part": _output_text("")})
        steps = [
            {"type": "response.output_text.delta", **part, "delta": token, "logprobs": []}
            for token in choice.tokens
        ]
        tail += [
            {"type": "response.output_text.done", **part, "text": choice.text, "logprobs": []},
            {"type": "response.content_part.done", **part, "part": _output_text(choice.text)},
        ]
    done_item = _output_item(env, choice, done=True)
    status = _final_status(choice)
    final = _response_object(env, status, [done_item], _response_usage(prompt_tokens, choice))
    tail += [
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {"type": f"response.{status}", "response": final},
    ]
    events = [*head, *steps, *tail]
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return Frames(
        b"".join(map(typed_sse, head)),
        tuple(map(typed_sse, steps)),
        b"".join(map(typed_sse, tail)),
    )
