"""The request parameters of OpenAI's API, per upstream path: what a client may send.

The proxy holds every provider's key, so whatever a body field does is done on the
operator's account. Only these names are taken from a client's body (serving.fields); a
provider opts in to others by name (`extra_fields` in its config: the sampling extras of
open-weight engines, say). `model` is set by dispatch; `provider` (OpenRouter's routing
object) is taken out by the request controls before this list is asked.

Deliberately absent: `background` (a background response is fetched later with GET
/v1/responses/{id}, which the proxy does not serve, and it runs on after the proxy cancels),
and every aggregator's or engine's own field (`models`, `route`, `plugins`, `chat_template`,
`prompt_embeds`, `guided_*`, `kv_transfer_params`, ...).
"""

from __future__ import annotations

_SAMPLING = frozenset(
    ("stream", "stream_options", "user", "n", "seed", "temperature", "top_p", "stop",
     "max_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs")
)  # fmt: skip
_CHAT = frozenset(
    ("messages", "functions", "function_call", "max_completion_tokens", "modalities",
     "prediction", "audio", "response_format", "tools", "tool_choice", "parallel_tool_calls",
     "top_logprobs", "reasoning_effort", "verbosity", "service_tier", "web_search_options",
     "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "store", "metadata")
)  # fmt: skip
_RESPONSES = frozenset(
    ("input", "instructions", "include", "max_output_tokens", "max_tool_calls", "metadata",
     "parallel_tool_calls", "previous_response_id", "conversation", "prompt",
     "prompt_cache_key", "prompt_cache_retention", "reasoning", "safety_identifier",
     "service_tier", "store", "stream", "stream_options", "temperature", "text", "tool_choice",
     "tools", "top_logprobs", "top_p", "truncation", "user")
)  # fmt: skip

# upstream path -> the OpenAI parameters a client may set there (besides `model`)
OPENAI_PARAMS: dict[str, frozenset[str]] = {
    "/chat/completions": _SAMPLING | _CHAT,
    "/completions": _SAMPLING | {"prompt", "suffix", "echo", "best_of"},
    "/embeddings": frozenset(("input", "encoding_format", "dimensions", "user")),
    "/responses": _RESPONSES,
}

# Responses fields that tie a request to state kept at one provider (a stored response, a
# conversation, a stored prompt): such a request is sent to one provider only (serving.fields).
STATEFUL_FIELDS = ("previous_response_id", "conversation", "prompt")
