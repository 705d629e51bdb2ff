"""Build the non-streamed answer a client asked for from the chunks of an upstream stream.

For stream=false clients we stream from the upstream anyway (so every request yields a
TTFT) and assemble here what the upstream would have returned: every choice of n, content,
reasoning, tool calls, logprobs, finish_reason, usage. Pure; no I/O.

`WholeAnswer` folds the events as they arrive, yielding to the event loop every
EVENTS_PER_SLICE events (one network read may hold a whole fast answer), so that a long
answer never stalls the other streams of the worker for more than a slice; it holds at most
MAX_ANSWER_BYTES of stream (then AnswerTooLarge, a 502 naming the limit). Text and lists
grow in place and are joined once, at the end: linear in the answer, never quadratic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson

from proxy.core.domain import Outcome
from proxy.core.errors import AnswerTooLarge
from proxy.upstream.base import MAX_ANSWER_BYTES, UpstreamFailure, event_failure
from proxy.upstream.sse import RESPONSES, data_of, is_error_event, parse_payload

_KEEP_TOP = ("id", "created", "model", "system_fingerprint", "service_tier")
# Events parsed and folded between two yields to the event loop (~1 ms on a slow machine).
EVENTS_PER_SLICE = 64
# The Responses API events that end a stream with the whole response object in them.
RESPONSE_ENDS = frozenset(("response.completed", "response.incomplete"))


class WholeAnswer:
    """One stream=false answer, folded from its upstream stream's events as they arrive.

    `feed` takes whole events (EventSplitter's output) and raises AnswerTooLarge once more
    than `limit` bytes came, UpstreamFailure at a provider's error event; `answer()` is the
    JSON object the client gets (UpstreamFailure when a Responses stream lacks its end)."""

    __slots__ = ("_assembly", "_limit", "_size")

    def __init__(self, kind: str, limit: int = MAX_ANSWER_BYTES) -> None:
        self._assembly = _ResponseAssembly() if kind == "responses" else _assembly(kind)
        self._limit = limit
        self._size = 0

    async def feed(self, events: bytes) -> None:
        if not events:
            return
        self._size += len(events)
        if self._size > self._limit:
            raise AnswerTooLarge(
                f"the provider's answer passed {self._limit} bytes, the most a stream=false "
                "answer may hold: ask for less (max_tokens, n, top_logprobs) or stream it"
            )
        position, done = 0, 0
        while position < len(events):
            end = events.find(b"\n\n", position)
            end = len(events) if end < 0 else end
            payload = data_of(events[position:end])
            position = end + 2
            chunk = parse_payload(payload) if payload is not None else None
            if chunk is not None:
                self._assembly.add(chunk)
            done += 1
            if done % EVENTS_PER_SLICE == 0:
                await asyncio.sleep(0)  # one read may hold a whole answer: let others run

    def answer(self) -> dict[str, Any]:
        return self._assembly.result()


def assemble_chat(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A chat answer as plain JSON values (WholeAnswer's holds orjson fragments)."""
    return _plain(_fold(_assembly("chat"), chunks))


def assemble_completion(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return _plain(_fold(_assembly("completion"), chunks))


def _plain(answer: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = orjson.loads(orjson.dumps(answer))
    return plain


def assemble_response(events: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """A Responses API stream's answer: the `response` object of its last
    `response.completed` (or `response.incomplete`) event, which holds the whole output and
    the usage; None when the stream has no such event."""
    assembly = _ResponseAssembly(check_errors=False)
    for event in events:
        assembly.add(event)
    return assembly.final


def _assembly(kind: str) -> _Assembly:
    if kind == "chat":
        return _Assembly("chat.completion", _ChatChoice)
    return _Assembly("text_completion", _TextChoice)


def _fold(assembly: _Assembly, chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    for chunk in chunks:
        assembly.add(chunk)
    return assembly.result()


class _Assembly:
    """Chat or text completions: top-level fields and usage, and one fold per choice."""

    __slots__ = ("_choice", "_choices", "_object", "_top", "_usage")

    def __init__(self, object_name: str, choice: type[_ChatChoice | _TextChoice]) -> None:
        self._object = object_name
        self._choice = choice
        self._top: dict[str, Any] = {}
        self._usage: Any = None
        self._choices: dict[int, _ChatChoice | _TextChoice] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        if is_error_event(chunk):
            raise event_failure(chunk, Outcome.STREAM_ERROR, "mid-stream")
        top = self._top
        if len(top) < len(_KEEP_TOP):
            for key in _KEEP_TOP:
                if key not in top and chunk.get(key) is not None:
                    top[key] = chunk[key]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for raw in chunk.get("choices") or ():
            index = int(raw.get("index", 0))
            choice = self._choices.get(index)
            if choice is None:
                choice = self._choices[index] = self._choice(index)
            choice.add(raw)

    def result(self) -> dict[str, Any]:
        rendered = [self._choices[i].render() for i in sorted(self._choices)]
        return {**self._top, "object": self._object, "choices": rendered,
                "usage": self._usage}  # fmt: skip


class _ResponseAssembly:
    __slots__ = ("_check_errors", "final")

    def __init__(self, *, check_errors: bool = True) -> None:
        self._check_errors = check_errors
        self.final: dict[str, Any] | None = None

    def add(self, event: dict[str, Any]) -> None:
        if self._check_errors and RESPONSES.is_error(event):
            raise event_failure(event, Outcome.STREAM_ERROR, "mid-stream")
        if event.get("type") in RESPONSE_ENDS and isinstance(event.get("response"), dict):
            self.final = event["response"]

    def result(self) -> dict[str, Any]:
        if self.final is None:
            raise UpstreamFailure(Outcome.STREAM_ERROR, "the stream ended without its response")
        return self.final


class _Logprobs:
    """A choice's logprobs: each list field kept as the JSON of its items, chunk by chunk,
    and joined once into an orjson.Fragment (tens of thousands of token entries as bytes,
    not as dicts the garbage collector walks and frees one by one); the other fields taken
    as first given."""

    __slots__ = ("lists", "other")

    def __init__(self) -> None:
        self.lists: dict[str, list[bytes]] = {}
        self.other: dict[str, Any] | None = None

    def add(self, more: dict[str, Any]) -> None:
        other = self.other
        if other is None:
            other = self.other = {}
        for key, value in more.items():
            if isinstance(value, list):
                if value:
                    self.lists.setdefault(key, []).append(orjson.dumps(value)[1:-1])
                else:
                    self.lists.setdefault(key, [])
            elif other.get(key) is None:
                other[key] = value

    @property
    def merged(self) -> dict[str, Any] | None:
        if self.other is None:
            return None
        lists = {key: orjson.Fragment(b"[" + b",".join(parts) + b"]")
                 for key, parts in self.lists.items()}  # fmt: skip
        return {**self.other, **lists}


class _TextChoice:
    __slots__ = ("finish_reason", "index", "logprobs", "text")

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.logprobs = _Logprobs()
        self.finish_reason: str | None = None

    def add(self, raw: dict[str, Any]) -> None:
        if raw.get("text"):
            self.text.append(raw["text"])
        if raw.get("logprobs"):
            self.logprobs.add(raw["logprobs"])
        if raw.get("finish_reason"):
            self.finish_reason = raw["finish_reason"]

    def render(self) -> dict[str, Any]:
        return {"index": self.index, "text": "".join(self.text),
                "logprobs": self.logprobs.merged, "finish_reason": self.finish_reason}  # fmt: skip


class _ToolCall:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type = "function"
        self.name: list[str] = []
        self.arguments: list[str] = []

    def add(self, call: dict[str, Any]) -> None:
        if call.get("id"):
            self.id = call["id"]
        if call.get("type"):
            self.type = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            self.name.append(function["name"])
        if function.get("arguments"):
            self.arguments.append(function["arguments"])

    def render(self) -> dict[str, Any]:
        function = {"name": "".join(self.name), "arguments": "".join(self.arguments)}
        return {"id": self.id, "type": self.type, "function": function}


class _ChatChoice:
    __slots__ = ("content", "finish_reason", "index", "logprobs", "reasoning", "refusal",
                 "role", "tool_calls")  # fmt: skip

    def __init__(self, index: int) -> None:
        self.index = index
        self.role = "assistant"
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, _ToolCall] = {}
        self.logprobs = _Logprobs()
        self.finish_reason: str | None = None

    def add(self, raw: dict[str, Any]) -> None:
        delta = raw.get("delta") or {}
        self.role = delta.get("role") or self.role
        if delta.get("content"):
            self.content.append(delta["content"])
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            self.reasoning.append(reasoning)
        for call in delta.get("tool_calls") or ():
            index = int(call.get("index", len(self.tool_calls)))
            slot = self.tool_calls.get(index)
            if slot is None:
                slot = self.tool_calls[index] = _ToolCall()
            slot.add(call)
        if delta.get("refusal"):
            self.refusal.append(delta["refusal"])
        if raw.get("logprobs"):
            self.logprobs.add(raw["logprobs"])
        if raw.get("finish_reason"):
            self.finish_reason = raw["finish_reason"]

    def render(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role}
        if self.content:
            message["content"] = "".join(self.content)
        else:
            message["content"] = None if self.tool_calls else ""
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i].render() for i in sorted(self.tool_calls)]
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        return {
            "index": self.index,
            "message": message,
            "logprobs": self.logprobs.merged,
            "finish_reason": self.finish_reason,
        }
