"""Server-sent events as OpenAI streams them: framing, and "does this chunk carry output?".

Pure and allocation-light: the hot path calls `EventSplitter.feed` on every network read and
`carries_output` only until the first token has been seen. Two stream grammars share the
framing: chat and text completions (`CHAT`: `choices[].delta`, an `error` key, `[DONE]`) and
the Responses API (`RESPONSES`: typed events, output in `*.delta` events, errors as `error`
and `response.failed` events, no `[DONE]`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

DONE = b"[DONE]"


class EventSplitter:
    """Cuts a byte stream into whole SSE events (blocks ending in a blank line).

    `feed(data)` returns the bytes of every event completed by `data`, each block still
    ending in its blank line, so that they can be forwarded as they are; an incomplete
    tail is kept for the next call. CRLF framing is normalised to LF.
    """

    __slots__ = ("_buffer", "_crlf")

    def __init__(self) -> None:
        self._buffer = b""
        self._crlf: bool | None = None

    def feed(self, data: bytes) -> bytes:
        """All complete events so far, concatenated (b"" if none completed yet)."""
        if self._crlf is None and data:
            self._crlf = b"\r\n" in data
        if self._crlf:
            data = data.replace(b"\r\n", b"\n")
        buffer = self._buffer + data if self._buffer else data
        if buffer.endswith(b"\n\n"):  # the usual read: whole events, nothing to copy
            self._buffer = b""
            return buffer
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return b""
        self._buffer = buffer[end + 2 :]
        return buffer[: end + 2]

    @property
    def pending(self) -> bytes:
        """An incomplete event left when the stream ended (normally empty)."""
        return self._buffer


def iter_data(events: bytes) -> list[bytes]:
    """The `data:` payload of each event in a block of whole events (comments skipped)."""
    out = []
    for block in events.split(b"\n\n"):
        if not block:
            continue
        if block.startswith(b"data: ") and b"\n" not in block:  # the usual one-line event
            out.append(block[6:])
            continue
        lines = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
        if lines:
            out.append(b"\n".join(lines))
    return out


def parse_payload(payload: bytes) -> dict[str, Any] | None:
    """The JSON object of one data payload; None for [DONE] or anything not an object."""
    if payload == DONE:
        return None
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


_OUTPUT_KEYS = frozenset(
    ("content", "reasoning_content", "reasoning", "refusal", "audio", "tool_calls", "function_call")
)


def carries_output(chunk: dict[str, Any]) -> bool:
    """True when a chat or text completion chunk carries generated output.

    Output is non-empty content, reasoning content, a refusal, audio, or any tool-call /
    function-call delta. A role-only first chunk or an empty-content chunk is not output.
    """
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):
            return True
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        for key, value in delta.items():  # a delta has a key or two; the output keys are 7
            if value and key in _OUTPUT_KEYS:
                return True
    return False


def is_error_event(chunk: dict[str, Any]) -> bool:
    """True for a provider's `{"error": ...}` event (one without choices): it failed in the
    stream, after its HTTP status said 200."""
    return "error" in chunk and not chunk.get("choices")


def error_event(body: dict[str, Any]) -> bytes:
    """An OpenAI-shaped error as one SSE event (what the openai SDK raises on mid-stream)."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _may_hold_chat_error(events: bytes) -> bool:
    return b'"error"' in events  # a JSON key or value with bare quotes, never escaped content


# -- the Responses API ----------------------------------------------------------------------

RESPONSE_ERRORS = frozenset(("error", "response.failed"))
_RESPONSE_ERROR_BYTES = re.compile(rb'"type":\s*"(?:error|response\.failed)"')


def response_carries_output(event: dict[str, Any]) -> bool:
    """True for a Responses API event that carries generated output: any `*.delta` event
    with a non-empty delta (output text, refusal, reasoning and reasoning summary text,
    function-call / custom tool / MCP arguments, audio, code). `response.created`,
    `response.in_progress`, `response.output_item.added` and the like are not output."""
    kind = event.get("type")
    return isinstance(kind, str) and kind.endswith(".delta") and bool(event.get("delta"))


def is_response_error(event: dict[str, Any]) -> bool:
    """A Responses API `error` or `response.failed` event."""
    return event.get("type") in RESPONSE_ERRORS


def response_error_event(body: dict[str, Any]) -> bytes:
    """An OpenAI-shaped error as a Responses API `error` event. It carries the error object
    too, which is what the openai SDK raises on mid-stream."""
    error = body["error"]
    payload = {
        "type": "error", "code": error.get("code"), "message": error.get("message"),
        "param": error.get("param"), "error": error,
    }  # fmt: skip
    return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"


def _may_hold_response_error(events: bytes) -> bool:
    # Not `"error"`: every response.created/completed event has `"error":null`, and the
    # completed one the whole output text, which must not be rewritten.
    return _RESPONSE_ERROR_BYTES.search(events) is not None


@dataclass(frozen=True, slots=True)
class StreamGrammar:
    """How one endpoint's stream says "output", "error", and how an error is sent on it."""

    carries_output: Callable[[dict[str, Any]], bool]
    is_error: Callable[[dict[str, Any]], bool]
    may_hold_error: Callable[[bytes], bool]  # a cheap check of raw events (to redact)
    error_event: Callable[[dict[str, Any]], bytes]


CHAT = StreamGrammar(carries_output, is_error_event, _may_hold_chat_error, error_event)
RESPONSES = StreamGrammar(
    response_carries_output, is_response_error, _may_hold_response_error, response_error_event
)
