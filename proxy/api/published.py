"""The figures OpenRouter publishes per endpoint, as this proxy serves them: for the admin API
and the report (every pair by name), and for clients at `GET /v1/models/{model}/endpoints`
in OpenRouter's shape (what they may see is `client_stats` in the config, off by default).

Computed when asked, from the scoreboard's windows (learning.published); never on the
request path.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.api.context import Services
from proxy.core.domain import Pair
from proxy.learning.published import Span, openrouter_fields, published


def spans_of(svc: Services, pair: Pair, now: float) -> list[Span]:
    """The pair's last 5 min / 30 min / day from the samples the scoreboard last read."""
    params = svc.policies.current.for_model(pair.model).window_params()
    return published(pair, svc.scoreboard.window_samples(pair), params, now)


def endpoints_of(svc: Services, model: str) -> dict[str, Any]:
    """OpenRouter's "list endpoints" answer for `model` (its providers, each with uptime,
    latency and throughput over the last 5 min, 30 min and day). Providers are named when
    `client_stats.provider_names` allows it, else numbered in config order (provider-1, ...)."""
    now = time.time()
    names = svc.config.client_stats.provider_names
    prices = svc.pricing.for_model(model)
    endpoints = []
    for i, provider in enumerate(svc.pairs[model], start=1):
        shown = provider if names else f"provider-{i}"
        price = prices.get(provider)
        endpoints.append({
            "name": f"{shown} | {model}", "model_name": model, "provider_name": shown,
            "tag": shown, "status": 0,
            "pricing": None if price is None else {
                "prompt": f"{price.prompt_usd:.10g}", "completion": f"{price.completion_usd:.10g}"},
            **openrouter_fields(spans_of(svc, Pair(model, provider), now)),
        })  # fmt: skip
    return {"data": {"id": model, "name": model, "created": 0, "description": "",
                     "endpoints": endpoints}}  # fmt: skip
