"""What a client may ask for: which models it sees, which request controls it may use, how
many tokens and choices one request may ask for; and the tokens a request is estimated to
use before its answer says (the tokens-per-minute limit counts it until then).

A model the client may not use is invisible: `/v1/models` leaves it out and a request for
it gets the same 404 as a model nobody configured, listing only the client's models. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from proxy.clients.registry import Client
from proxy.core.errors import InvalidRequest, ModelNotFound

# RequestLimits cap names (serving.endpoint's `limited`) -> the client's own cap
_CAPS = {"max_tokens": "max_tokens", "max_n": "max_n"}


def visible(client: Client, models: Iterable[str]) -> list[str]:
    """The models the client sees, in config order."""
    return [m for m in models if client.sees(m)]


def model_pairs(
    client: Client, pairs: Mapping[str, Mapping[str, str]], model: str
) -> Mapping[str, str]:
    """The model's pairs, if the client may use it. Raises ModelNotFound (404), the same for
    a model the client may not use as for one nobody configured."""
    found = pairs.get(model) if client.sees(model) else None
    if found is None:
        known = ", ".join(visible(client, pairs))
        raise ModelNotFound(f"model '{model}' is not configured (known: {known})", param="model")
    return found


def check_caps(client: Client, body: Mapping[str, Any], fields: Iterable[tuple[str, str]]) -> None:
    """Raise InvalidRequest (param: the field) for a max_tokens or n above the client's cap.
    `fields`: (request field, policy cap name), as the endpoint says (serving.endpoint);
    the policy's own caps (and whole-number checks) come first (RequestLimits.check)."""
    for name, cap_name in fields:
        attr = _CAPS.get(cap_name)
        cap: int | None = getattr(client, attr) if attr is not None else None
        value = body.get(name)
        if cap is not None and isinstance(value, int) and value > cap:
            raise InvalidRequest(
                f"'{name}' is {value}, above the limit of {cap} for client '{client.name}'",
                param=name,
            )


def allowed_controls(client: Client, granted_by_policy: Collection[str]) -> Collection[str]:
    """The request controls the client may use on a model: those the model's policy grants
    every client (`client_controls`), and its own (`auth.clients.*.controls`)."""
    if not client.controls:
        return granted_by_policy
    if not granted_by_policy:
        return client.controls
    return client.controls.union(granted_by_policy)


def estimate_tokens(
    body: Mapping[str, Any], prompt_tokens: int, fields: Iterable[tuple[str, str]]
) -> int:
    """Tokens a request may use: its prompt's estimate plus the completion tokens it asks
    for (max_tokens x n), as OpenAI's limiter counts before the answer; without max_tokens,
    the prompt alone (its charge then counts what the answer used)."""
    completion, choices = 0, 1
    for name, cap_name in fields:
        value = body.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if cap_name == "max_tokens":
            completion = max(completion, value)
        elif cap_name == "max_n":
            choices = max(choices, value)
    return prompt_tokens + completion * choices
