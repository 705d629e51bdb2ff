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

from proxy.core.domain import Outcome
from proxy.upstream.base import MAX_EVENT_BYTES, UpstreamFailure

DONE = b"[DONE]"


class EventSplitter:
    """Cuts a byte stream into whole SSE events (blocks ending in a blank line).

    `feed(data)` returns the bytes of every event completed by `data`, each block still
    ending in its blank line, so that they can be forwarded as they are; an incomplete
    tail is kept for the next call. CRLF framing is normalised to LF.

    Linear in the bytes fed: an incomplete tail grows in place and only its new bytes are
    searched for the blank line, so a large event arriving in many reads costs one pass, not
    one per read. A tail past `max_event_bytes` raises UpstreamFailure (a provider sending
    one endless event must not fill the memory).
    """

    __slots__ = ("_buffer", "_crlf", "max_event_bytes")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._crlf: bool | None = None
        self.max_event_bytes = max_event_bytes

    def feed(self, data: bytes) -> bytes:
        """All complete events so far, concatenated (b"" if none completed yet)."""
        if self._crlf is None and data:
            self._crlf = b"\r" in data
        if self._crlf:
            data = self._normalised(data)
        buffer = self._buffer
        if not buffer:
            if data.endswith(b"\n\n"):  # the usual read: whole events, nothing to copy
                return data
            end = data.rfind(b"\n\n")
            buffer += data[end + 2 :] if end >= 0 else data
            self._check_size()
            return data[: end + 2] if end >= 0 else b""
        start = len(buffer) - 1  # a blank line may straddle the old tail and `data`
        buffer += data
        end = buffer.rfind(b"\n\n", start)
        if end < 0:
            self._check_size()
            return b""
        events = bytes(buffer[: end + 2])
        del buffer[: end + 2]
        return events

    def _normalised(self, data: bytes) -> bytes:
        """CRLF -> LF, with a CR that ends one read joined to the LF that starts the next."""
        if self._buffer.endswith(b"\r") and data.startswith(b"\n"):
            del self._buffer[-1]
        return data.replace(b"\r\n", b"\n")

    def _check_size(self) -> None:
        if len(self._buffer) > self.max_event_bytes:
            size = len(self._buffer)
            self._buffer = bytearray()
            raise UpstreamFailure(
                Outcome.STREAM_ERROR,
                f"an event of more than {self.max_event_bytes} bytes (at {size} without its "
                "end): refused, the limit of one server-sent event",
            )

    @property
    def pending(self) -> bytes:
        """An incomplete event left when the stream ended (normally empty)."""
        return bytes(self._buffer)


def iter_data(events: bytes) -> list[bytes]:
    """The `data:` payload of each event in a block of whole events (comments skipped)."""
    out = []
    for block in events.split(b"\n\n"):
        payload = data_of(block)
        if payload is not None:
            out.append(payload)
    return out


def data_of(block: bytes) -> bytes | None:
    """The `data:` payload of one event (its lines joined), None when it has none."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the usual one-line event
        return block[6:]
    lines = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


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


# An output field with a non-empty string value. Inside a JSON string a key's quotes are
# escaped (\"content\":), so text that merely mentions a key never matches.
_CHAT_OUTPUT_BYTES = re.compile(
    rb'"(?:content|reasoning_content|reasoning|refusal|text|arguments)":\s*"[^"]'
)


def count_chat_output(events: bytes) -> int:
    """Output-carrying chunks among whole chat or completion events, counted from their
    bytes (no JSON parsed: this runs on every read of a relayed stream). An estimate of
    the answer's tokens when it reports no usage: one chunk is usually one token."""
    return len(_CHAT_OUTPUT_BYTES.findall(events))


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


_RESPONSE_DELTA_BYTES = re.compile(rb'"type":\s*"[a-z_.]+\.delta"')


def count_response_output(events: bytes) -> int:
    """`*.delta` events among whole Responses API events, from their bytes (see
    `count_chat_output`)."""
    return len(_RESPONSE_DELTA_BYTES.findall(events))


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
    count_output: Callable[[bytes], int] = count_chat_output  # output chunks in raw events


CHAT = StreamGrammar(carries_output, is_error_event, _may_hold_chat_error, error_event)
RESPONSES = StreamGrammar(
    response_carries_output, is_response_error, _may_hold_response_error, response_error_event,
    count_response_output,
)  # fmt: skip
