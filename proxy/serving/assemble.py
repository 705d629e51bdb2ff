"""Build the non-streamed answer a client asked for from the chunks of an upstream stream.

For stream=false clients we stream from the upstream anyway (so every request yields a
TTFT) and assemble here what the upstream would have returned: every choice of n, content,
reasoning, tool calls, logprobs, finish_reason, usage. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

_KEEP_TOP = ("id", "created", "model", "system_fingerprint", "service_tier")


def assemble_chat(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    choices: dict[int, _ChatChoice] = {}

    def add(index: int, raw: dict[str, Any]) -> None:
        choices.setdefault(index, _ChatChoice(index)).add(raw)

    top, usage = _fold(chunks, add)
    rendered = [choices[i].render() for i in sorted(choices)]
    return {**top, "object": "chat.completion", "choices": rendered, "usage": usage}


def assemble_completion(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    choices: dict[int, dict[str, Any]] = {}

    def add(index: int, raw: dict[str, Any]) -> None:
        choice = choices.setdefault(
            index, {"index": index, "text": "", "logprobs": None, "finish_reason": None}
        )
        choice["text"] += raw.get("text") or ""
        if raw.get("logprobs"):
            choice["logprobs"] = _concat_lists(choice["logprobs"], raw["logprobs"])
        if raw.get("finish_reason"):
            choice["finish_reason"] = raw["finish_reason"]

    top, usage = _fold(chunks, add)
    rendered = [choices[i] for i in sorted(choices)]
    return {**top, "object": "text_completion", "choices": rendered, "usage": usage}


# The Responses API events that end a stream with the whole response object in them.
RESPONSE_ENDS = frozenset(("response.completed", "response.incomplete"))


def assemble_response(events: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """A Responses API stream's answer: the `response` object of its last
    `response.completed` (or `response.incomplete`) event, which holds the whole output and
    the usage; None when the stream has no such event."""
    answer = None
    for event in events:
        if event.get("type") in RESPONSE_ENDS and isinstance(event.get("response"), dict):
            answer = event["response"]
    return answer


def _fold(
    chunks: Iterable[dict[str, Any]], add: Callable[[int, dict[str, Any]], None]
) -> tuple[dict[str, Any], Any]:
    """Walk the chunks: collect the top-level fields and usage, hand each choice to `add`."""
    top: dict[str, Any] = {}
    usage: Any = None
    for chunk in chunks:
        _take_top(top, chunk)
        if chunk.get("usage"):
            usage = chunk["usage"]
        for raw in chunk.get("choices") or ():
            add(int(raw.get("index", 0)), raw)
    return top, usage


def _take_top(top: dict[str, Any], chunk: dict[str, Any]) -> None:
    for key in _KEEP_TOP:
        if key not in top and chunk.get(key) is not None:
            top[key] = chunk[key]


def _concat_lists(into: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    """Merge logprobs objects: list fields are concatenated, the rest taken as given."""
    out = dict(into or {})
    for key, value in more.items():
        if isinstance(value, list):
            out[key] = (out.get(key) or []) + value
        elif key not in out or out[key] is None:
            out[key] = value
    return out


class _ChatChoice:
    __slots__ = ("content", "finish_reason", "index", "logprobs", "other", "reasoning",
                 "role", "tool_calls")  # fmt: skip

    def __init__(self, index: int) -> None:
        self.index = index
        self.role = "assistant"
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.other: dict[str, Any] = {}

    def add(self, raw: dict[str, Any]) -> None:
        delta = raw.get("delta") or {}
        self.role = delta.get("role") or self.role
        if delta.get("content"):
            self.content.append(delta["content"])
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            self.reasoning.append(reasoning)
        for call in delta.get("tool_calls") or ():
            self._add_tool_call(call)
        if delta.get("refusal"):
            self.other["refusal"] = self.other.get("refusal", "") + delta["refusal"]
        if raw.get("logprobs"):
            self.logprobs = _concat_lists(self.logprobs, raw["logprobs"])
        if raw.get("finish_reason"):
            self.finish_reason = raw["finish_reason"]

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        slot = self.tool_calls.setdefault(
            int(call.get("index", len(self.tool_calls))),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""

    def render(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role}
        if self.content:
            message["content"] = "".join(self.content)
        else:
            message["content"] = None if self.tool_calls else ""
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        message.update(self.other)
        return {
            "index": self.index,
            "message": message,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }
