"""Request bodies the simulated providers accept, as lenient pydantic models.

Owns validation of the fields the simulator acts on and the translation of a body into an
``output.Ask`` and a prompt text. Unknown fields are kept (``extra="allow"``), as a provider
accepts parameters it ignores.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from proxy.simulator.output import Ask

MAX_CHOICES = 16
MAX_OUTPUT_TOKENS = 8192


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class StreamOptions(_Lenient):
    include_usage: bool = False


class FunctionSpec(_Lenient):
    name: str = Field(min_length=1)
    parameters: dict[str, Any] | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionSpec


class FunctionName(_Lenient):
    name: str = Field(min_length=1)


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionName


class _Generation(_Lenient):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def _stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatBody(_Generation):
    """``POST /v1/chat/completions``."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None

    def prompt(self) -> str:
        """The text of every message, one per line."""
        return "\n".join(_message_text(message) for message in self.messages)

    def ask(self) -> Ask:
        """What the output must look like."""
        return Ask(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=self._stops(),
            top_logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            tool=self._forced_tool(),
        )

    def _forced_tool(self) -> dict[str, Any] | None:
        if not self.tools:
            return None
        if self.tool_choice == "required":
            return self.tools[0].function.model_dump()
        if isinstance(self.tool_choice, NamedToolChoice):
            for tool in self.tools:
                if tool.function.name == self.tool_choice.function.name:
                    return tool.function.model_dump()
            return {"name": self.tool_choice.function.name}
        return None


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


class CompletionBody(_Generation):
    """``POST /v1/completions`` (legacy)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)

    def prompts(self) -> list[str]:
        """Each prompt as text; token-id prompts become their ids joined by spaces."""
        return _texts(self.prompt)

    def ask(self) -> Ask:
        """What the output must look like."""
        return Ask(max_tokens=self.max_tokens, stop=self._stops(), top_logprobs=self.logprobs)


class ResponsesBody(_Lenient):
    """``POST /v1/responses``: text input or input items, optionally a forced function tool."""

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def prompt(self) -> str:
        """The instructions and the text of every input item, one per line."""
        items = [self.input] if isinstance(self.input, str) else self.input or []
        texts = [item if isinstance(item, str) else _message_text(item) for item in items]
        return "\n".join([self.instructions or "", *texts]).strip()

    def ask(self) -> Ask:
        """What the output must look like."""
        return Ask(max_tokens=self.max_output_tokens, tool=self._forced_tool())

    def _forced_tool(self) -> dict[str, Any] | None:
        functions = [t for t in self.tools or () if t.get("type") == "function" and t.get("name")]
        if not functions:
            return None
        if self.tool_choice == "required":
            return functions[0]
        if isinstance(self.tool_choice, dict) and self.tool_choice.get("type") == "function":
            named = [t for t in functions if t["name"] == self.tool_choice.get("name")]
            return named[0] if named else {"name": self.tool_choice.get("name")}
        return None


class EmbeddingBody(_Lenient):
    """``POST /v1/embeddings``."""

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1, le=4096)
    encoding_format: Literal["float", "base64"] = "float"

    def inputs(self) -> list[str]:
        """Each input as text; token-id inputs become their ids joined by spaces."""
        return _texts(self.input)


def _texts(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(value, str):
        return [value]
    texts: list[str] = []
    ids: list[str] = []
    for item in value:
        if isinstance(item, int):
            ids.append(str(item))
        elif isinstance(item, str):
            texts.append(item)
        else:
            texts.append(" ".join(str(token) for token in item))
    return [" ".join(ids), *texts] if ids else texts
