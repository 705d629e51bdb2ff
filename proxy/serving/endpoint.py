"""The endpoints of the OpenAI surface as values: chat, completions, embeddings, responses.

An `Endpoint` carries everything the request path needs to know of one endpoint: its public
route and upstream path, the field that holds the prompt, how its stream says "output" and
"error" (upstream.sse's grammar), whether a stream=false answer may come from an upstream
stream and how it is assembled, how usage is reported, whether a request may be hedged, and
which providers serve it. Code asks the value; nothing branches on an endpoint's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.core.errors import InvalidRequest
from proxy.settings.config import LiteLLMProvider, OpenAIProvider
from proxy.upstream.params import OPENAI_PARAMS, STATEFUL_FIELDS
from proxy.upstream.sse import CHAT, RESPONSES, StreamGrammar

Chunks = list[dict[str, Any]]
ProviderConfig = OpenAIProvider | LiteLLMProvider


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint. `streams`: it has a streamed form (an answer may be assembled from an
    upstream stream, and a TTFT measured). `usage_in_stream`: a chat-style stream reports
    usage in a usage-only chunk when asked (`stream_options.include_usage`); otherwise usage
    comes in the stream's last event (the Responses API). `serves`: which providers serve
    it (None: every one); the others are excluded with `unserved_reason`."""

    name: str
    route: str
    path: str
    prompt_field: str
    prompt_types: tuple[type, ...]
    prompt_required: bool
    grammar: StreamGrammar
    streams: bool
    hedgeable: bool
    usage_in_stream: bool
    assembly: str  # how a whole answer is folded from its stream (serving.assemble)
    # (request field, the policy's cap that bounds it: policy.RequestLimits)
    limited: tuple[tuple[str, str], ...] = ()
    serves: Callable[[ProviderConfig], bool] | None = None
    unserved_reason: str = ""
    # body fields that tie a request to state kept at one provider (serving.fields)
    stateful_fields: tuple[str, ...] = ()

    def parse(self, raw: bytes) -> dict[str, Any]:
        """The client's JSON object, checked only for what routing needs: the model, the
        stream flag and the prompt field. Raises InvalidRequest naming the field."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("'model' is required and must be a string", param="model")
        field = self.prompt_field
        if (self.prompt_required or field in body) and not isinstance(
            body.get(field), self.prompt_types
        ):
            raise InvalidRequest(f"'{field}' is required for this endpoint", param=field)
        stream = body.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise InvalidRequest("'stream' must be a boolean", param="stream")
        return body

    @property
    def params(self) -> frozenset[str]:
        """The OpenAI parameters a client may set here (upstream.params; serving.fields)."""
        return OPENAI_PARAMS[self.path]

    def is_streamed(self, body: Mapping[str, Any]) -> bool:
        """Whether the client asked for a stream (an endpoint without one never streams)."""
        return self.streams and bool(body.get("stream"))

    def served_by(self, providers: Mapping[str, ProviderConfig]) -> frozenset[str] | None:
        """The configured providers that serve this endpoint; None when all do."""
        serves = self.serves
        if serves is None:
            return None
        return frozenset(name for name, config in providers.items() if serves(config))

    def upstream_body(
        self,
        body: dict[str, Any],
        upstream_model: str,
        *,
        upstream_stream: bool,
        client_stream: bool,
        wants_usage: bool,
        omit: frozenset[str] = frozenset(),
    ) -> bytes:
        """The JSON sent upstream: the client's body with the provider's model id; streamed
        when the client asked for a whole answer but the provider may stream it (then
        with usage, where usage must be asked for); `wants_usage`: metering needs the
        usage of a client's stream (its usage chunk is dropped again: serving.metering).
        `omit`: extra fields this provider does not take (serving.fields)."""
        body["model"] = upstream_model
        if omit:
            body = {k: v for k, v in body.items() if k not in omit}
        if upstream_stream and not client_stream:
            if self.usage_in_stream:
                return orjson.dumps(
                    {**body, "stream": True, "stream_options": {"include_usage": True}}
                )
            return orjson.dumps({**body, "stream": True})
        if client_stream and wants_usage and self.usage_in_stream:
            options = body.get("stream_options")
            options = {**options, "include_usage": True} if isinstance(options, dict) else None
            return orjson.dumps({**body, "stream_options": options or {"include_usage": True}})
        return orjson.dumps(body)


def _serves_responses(config: ProviderConfig) -> bool:
    """The provider's config says it serves the Responses API (litellm: never)."""
    return isinstance(config, OpenAIProvider) and config.responses


CHAT_COMPLETIONS = Endpoint(
    "chat", "/v1/chat/completions", "/chat/completions", "messages", (list,), True, CHAT,
    streams=True, hedgeable=True, usage_in_stream=True, assembly="chat",
    limited=(("n", "max_n"), ("max_tokens", "max_tokens"),
             ("max_completion_tokens", "max_tokens"), ("top_logprobs", "max_top_logprobs")),
)  # fmt: skip
COMPLETIONS = Endpoint(
    "completions", "/v1/completions", "/completions", "prompt", (str, list), True, CHAT,
    streams=True, hedgeable=True, usage_in_stream=True, assembly="completion",
    limited=(("n", "max_n"), ("best_of", "max_n"), ("max_tokens", "max_tokens"),
             ("logprobs", "max_top_logprobs")),
)  # fmt: skip
EMBEDDINGS = Endpoint(
    "embeddings", "/v1/embeddings", "/embeddings", "input", (str, list), True, CHAT,
    streams=False, hedgeable=False, usage_in_stream=False, assembly="none",
)  # fmt: skip
# A Responses request may have no `input` (a stored `prompt` template, previous_response_id).
RESPONSES_API = Endpoint(
    "responses", "/v1/responses", "/responses", "input", (str, list), False, RESPONSES,
    streams=True, hedgeable=True, usage_in_stream=False, assembly="responses",
    limited=(("max_output_tokens", "max_tokens"), ("top_logprobs", "max_top_logprobs")),
    serves=_serves_responses,
    unserved_reason="does not serve the Responses API (its config has responses: false)",
    stateful_fields=STATEFUL_FIELDS,
)  # fmt: skip

ENDPOINTS = (CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS, RESPONSES_API)
BY_ROUTE: Mapping[str, Endpoint] = {e.route: e for e in ENDPOINTS}
