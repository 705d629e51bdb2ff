"""Deterministic model output: the same request always gets the same answer.

Owns what a simulated model "says": words derived from the prompt text and the choice index,
``stop`` truncation, per-token logprobs, tool calls with arguments shaped by the tool's JSON
schema, and embedding vectors. Knows nothing of HTTP or of the OpenAI wire shapes (``wire``
does those): a stream and a single response are both rendered from the same ``Choice``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_MAX_TOKENS = 16
ARGUMENT_PIECE_CHARS = 8

_VOCABULARY = (
    "alpha",
    "bravo",
    "river",
    "stone",
    "light",
    "cloud",
    "amber",
    "forest",
    "signal",
    "orbit",
    "meadow",
    "vector",
    "quiet",
    "harbor",
    "ember",
    "lattice",
    "prism",
    "echo",
    "summit",
    "delta",
    "canyon",
    "breeze",
    "copper",
    "willow",
    "pixel",
    "marble",
    "aurora",
    "glacier",
    "tundra",
    "falcon",
    "cedar",
    "lantern",
    "compass",
    "velvet",
)


def _digest(*parts: object) -> int:
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class TokenLogprob:
    """Log probability of one output token and, if asked, its top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ToolCall:
    """One function call; ``"".join(argument_pieces)`` is the JSON arguments string."""

    id: str
    name: str
    argument_pieces: tuple[str, ...]

    @property
    def arguments(self) -> str:
        """The whole JSON arguments string."""
        return "".join(self.argument_pieces)


@dataclass(frozen=True)
class Choice:
    """One choice of an answer: text tokens (or a tool call), logprobs and finish reason."""

    index: int
    tokens: tuple[str, ...]
    logprobs: tuple[TokenLogprob, ...] | None
    tool_call: ToolCall | None
    finish_reason: str

    @property
    def text(self) -> str:
        """The text output (empty for a tool call)."""
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        """Tokens this choice counts in usage: words, or pieces of tool-call arguments."""
        if self.tool_call is not None:
            return len(self.tool_call.argument_pieces)
        return len(self.tokens)


@dataclass(frozen=True)
class Ask:
    """What a request asks of the output, independent of the endpoint.

    ``max_tokens`` None means the model's natural length (``DEFAULT_MAX_TOKENS``, finish
    ``stop``); a given ``max_tokens`` is always reached (finish ``length``) unless a ``stop``
    string cuts the text first. ``top_logprobs`` None means no logprobs.
    """

    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None
    tool: dict[str, Any] | None = None


def count_words(text: str) -> int:
    """Token estimate for usage: whitespace-separated words, at least 1."""
    return max(1, len(text.split()))


def generate(prompt: str, index: int, ask: Ask) -> Choice:
    """The choice ``index`` of the answer to ``prompt``."""
    if ask.tool is not None:
        call = _tool_call(prompt, index, ask.tool)
        return Choice(index, (), None, call, "tool_calls")
    length = ask.max_tokens or DEFAULT_MAX_TOKENS
    words = [_word(prompt, index, position) for position in range(length)]
    tokens = [words[0], *(" " + word for word in words[1:])]
    tokens, is_stopped = _cut_at_stop(tokens, ask.stop)
    finish = "stop" if is_stopped or ask.max_tokens is None else "length"
    logprobs = None
    if ask.top_logprobs is not None:
        logprobs = tuple(
            _logprob(token, position, ask.top_logprobs) for position, token in enumerate(tokens)
        )
    return Choice(index, tuple(tokens), logprobs, None, finish)


def _word(prompt: str, index: int, position: int) -> str:
    prompt_words = prompt.split()
    pick = _digest(prompt, index, position)
    if prompt_words and pick % 4 == 0:
        return prompt_words[(pick >> 8) % len(prompt_words)].strip(".,;:!?\"'").lower() or "echo"
    return _VOCABULARY[(pick >> 8) % len(_VOCABULARY)]


def _cut_at_stop(tokens: list[str], stop: Sequence[str]) -> tuple[list[str], bool]:
    text = "".join(tokens)
    cuts = [text.find(s) for s in stop if s and s in text]
    if not cuts:
        return tokens, False
    remaining = min(cuts)
    kept: list[str] = []
    for token in tokens:
        if remaining <= 0:
            break
        kept.append(token[:remaining])
        remaining -= len(token)
    return kept, True


def _logprob(token: str, position: int, top_n: int) -> TokenLogprob:
    logprob = -round((_digest(token, position) % 2000) / 1000, 4)
    top: list[tuple[str, float]] = []
    if top_n:
        top.append((token, logprob))
        start = _digest(token, position)
        alternatives = (" " + _VOCABULARY[(start + k) % len(_VOCABULARY)] for k in range(1, 64))
        for rank, alternative in enumerate(a for a in alternatives if a != token):
            if rank + 1 >= top_n:
                break
            top.append((alternative, round(logprob - 0.5 * (rank + 1), 4)))
    return TokenLogprob(token, logprob, tuple(top))


def _tool_call(prompt: str, index: int, tool: dict[str, Any]) -> ToolCall:
    name = str(tool.get("name", "tool"))
    schema = tool.get("parameters") or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    arguments = {
        key: _argument(prompt, index, key, spec)
        for key, spec in (properties.items() if isinstance(properties, dict) else ())
    }
    text = orjson.dumps(arguments).decode()
    pieces = tuple(
        text[start : start + ARGUMENT_PIECE_CHARS]
        for start in range(0, len(text), ARGUMENT_PIECE_CHARS)
    )
    call_id = f"call_{_digest(prompt, index, name):016x}"
    return ToolCall(call_id, name, pieces)


def _argument(prompt: str, index: int, key: str, spec: Any) -> Any:
    kind = spec.get("type") if isinstance(spec, dict) else None
    pick = _digest(prompt, index, key)
    if isinstance(spec, dict) and isinstance(spec.get("enum"), list) and spec["enum"]:
        return spec["enum"][pick % len(spec["enum"])]
    if kind == "integer":
        return pick % 100
    if kind == "number":
        return round((pick % 10_000) / 100, 2)
    if kind == "boolean":
        return bool(pick % 2)
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return _VOCABULARY[pick % len(_VOCABULARY)]


def embed(text: str, dimensions: int) -> list[float]:
    """A unit-length vector derived from ``text`` only."""
    raw = [((_digest(text, i) % 20_001) - 10_000) / 10_000 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
