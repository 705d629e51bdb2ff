"""Providers that do not speak OpenAI's protocol, through litellm (imported lazily).

litellm takes ~4 s to import and tries to download its price map at import time, so it is
imported inside `_litellm()` only, with LITELLM_LOCAL_MODEL_COST_MAP=True so it uses the map
it ships with: by the app's start-up (`preload_litellm`) when a litellm provider is
configured, so no request waits for it, and never when none is. Its chunks are turned
back into OpenAI SSE bytes, so dispatch and measurement treat every provider alike; its
exceptions become UpstreamFailure here.

Only OpenAI request parameters reach litellm from a client's body (upstream.params, less
`metadata`, which is litellm's own argument): every argument that chooses where and how
litellm connects (api_base, base_url, api_key, extra_headers, custom_llm_provider, aws_*,
vertex_*, mock_response, metadata, ...) comes from config alone, so no client can send a
provider's key to a URL of its choice. The provider's `extra_fields` go as `extra_body` (a
body litellm merges into the provider's JSON, never into a URL or a header); anything else is
dropped (logged once per provider and field). Where a client's field and the provider's
configured `params` name the same argument, the config's value is sent.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from proxy.core.domain import Outcome
from proxy.core.errors import ConfigError
from proxy.settings.config import Config, LiteLLMProvider
from proxy.upstream import params
from proxy.upstream.base import (
    MAX_ERROR_READ,
    UpstreamFailure,
    outcome_for_status,
    parse_retry_after,
)

log = logging.getLogger("ttft_router.upstream")
DONE_EVENT = b"data: [DONE]\n\n"

# OpenAI parameters that are litellm's own arguments too: never taken from a client.
LITELLM_OWN = frozenset(("metadata",))
OPENAI_PARAMS: dict[str, frozenset[str]] = {
    path: names - LITELLM_OWN for path, names in params.OPENAI_PARAMS.items()
}


# litellm's own loggers: at DEBUG they print every call's arguments (api_base, headers),
# so they are held at WARNING whatever the root level is.
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm")


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    module: Any = litellm
    if not getattr(module, "suppress_debug_info", False):  # first import: quiet it once
        module.suppress_debug_info = True
        module.set_verbose = False
        for name in LITELLM_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    return module


def require_litellm(config: Config) -> None:
    """Raise ConfigError when the config needs litellm (a `kind: litellm` provider, or
    `prober.litellm_prices`) and this install lacks it (the `litellm` extra)."""
    users = [f"providers.{name}" for name, provider in config.providers.items()
             if isinstance(provider, LiteLLMProvider)]  # fmt: skip
    if config.prober.litellm_prices:
        users.append("prober.litellm_prices")
    if users and importlib.util.find_spec("litellm") is None:
        raise ConfigError(
            f"{', '.join(users)}: needs litellm, which this install lacks: pip install "
            "'ttft-router[litellm]' (the image: docker build --build-arg WITH_LITELLM=true)"
        )


def preload_litellm() -> None:
    """Import litellm now (the app's start-up, when a litellm provider is configured), so
    that no request waits for the import and no TTFT sample includes it."""
    started = time.perf_counter()
    _litellm()
    log.info("litellm imported in %.1f s", time.perf_counter() - started)


class LiteLLMResponse:
    status = 200

    def __init__(self, result: Any, stream: bool) -> None:
        self._result = result
        self._stream = stream

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._result:
                yield b"data: " + orjson.dumps(_as_dict(chunk)) + b"\n\n"
        except Exception as exc:  # litellm raises its own tree; translated here, once
            raise _translate(exc) from exc
        yield DONE_EVENT

    async def read(self) -> bytes:
        return orjson.dumps(_as_dict(self._result))


# Distinct names of dropped request fields remembered (to log each once): clients choose
# the names, so the memory of them is capped.
MAX_DROPPED_NAMES = 256


class LiteLLMUpstream:
    def __init__(self, name: str, config: LiteLLMProvider) -> None:
        self.name = name
        self._config = config
        self._extras = frozenset(config.extra_fields)
        self._dropped_seen: set[str] = set()
        if config.forward_unknown_fields:
            log.warning(
                "provider %s: forward_unknown_fields is no longer used; list the fields "
                "clients may send it in extra_fields (docs/api.md)", name,
            )  # fmt: skip

    @asynccontextmanager
    async def open(self, path: str, body: bytes, *, stream: bool) -> AsyncIterator[LiteLLMResponse]:
        litellm = _litellm()
        request = self._request(path, orjson.loads(body))
        model = f"{self._config.litellm_provider}/{request.pop('model')}"
        try:
            if path == "/embeddings":
                result = await litellm.aembedding(model=model, **request)
            elif path == "/chat/completions":
                result = await litellm.acompletion(model=model, **request)
            else:
                result = await litellm.atext_completion(model=model, **request)
        except Exception as exc:
            raise _translate(exc) from exc
        try:
            yield LiteLLMResponse(result, stream)
        finally:
            close = getattr(result, "aclose", None)
            if close is not None:
                await close()

    def _request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """litellm's keyword arguments: the client's OpenAI parameters, its extra fields as
        extra_body, then the config's arguments (which win a clash). Never a litellm routing
        or credential argument from the client."""
        allowed = OPENAI_PARAMS[path]
        request = {k: v for k, v in body.items() if k in allowed}
        rest = {k: v for k, v in body.items() if k not in allowed and k != "model"}
        extra = {k: v for k, v in rest.items() if k in self._extras}
        if extra:
            request["extra_body"] = extra
        if len(extra) < len(rest):
            self._log_dropped({k for k in rest if k not in extra})
        kwargs = self._kwargs()
        configured = kwargs.get("extra_body")
        if extra and isinstance(configured, dict):  # both: the client's extras, the config's win
            kwargs["extra_body"] = {**extra, **configured}
        clash = (request.keys() & kwargs.keys()) - {"extra_body"}
        if clash:
            self._log_dropped(clash, by_config=True)
        request.update(kwargs)
        request["model"] = body["model"]
        return request

    def _log_dropped(self, names: set[str], *, by_config: bool = False) -> None:
        """Log each dropped field name once, remembering at most MAX_DROPPED_NAMES (of at
        most 64 characters each)."""
        room = MAX_DROPPED_NAMES - len(self._dropped_seen)
        new = sorted({k[:64] for k in names} - self._dropped_seen)[: max(room, 0)]
        if not new:
            return
        self._dropped_seen.update(new)
        why = (
            "are set by the provider's params in config, whose values were sent"
            if by_config
            else "are not OpenAI parameters litellm takes from clients nor in the provider's "
            "extra_fields, and were not sent"
        )
        log.warning(
            "provider %s (kind litellm): request fields %s %s%s", self.name,
            ", ".join(map(repr, new[:10])), why,
            "; no further names are listed" if len(new) == room else "",
        )  # fmt: skip

    def _kwargs(self) -> dict[str, Any]:
        c = self._config
        kwargs: dict[str, Any] = {
            "timeout": c.timeouts.total_s,
            "num_retries": 0,
            **c.params,
        }
        if c.api_key is not None:
            kwargs["api_key"] = c.api_key.get_secret_value()
        if c.api_base is not None:
            kwargs["api_base"] = str(c.api_base).rstrip("/")
        if c.headers:
            kwargs["extra_headers"] = dict(c.headers)
        return kwargs

    async def close(self) -> None:
        return None


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    dumped = obj.model_dump(exclude_none=True)
    return dumped if isinstance(dumped, dict) else {}


def _translate(exc: Exception) -> UpstreamFailure:
    """litellm's exceptions -> UpstreamFailure, narrowest type first (its classes, imported
    with litellm). The text is the provider's: redacted by whoever shows it."""
    litellm = _litellm()
    status = getattr(exc, "status_code", None)
    message = str(exc)[:MAX_ERROR_READ]  # redacted, then cut, by whoever shows it
    name = type(exc).__name__
    if isinstance(exc, litellm.Timeout | TimeoutError):
        return UpstreamFailure(Outcome.TIMEOUT, f"timed out: {message}")
    if isinstance(exc, litellm.APIConnectionError) or not isinstance(status, int):
        return UpstreamFailure(Outcome.CONNECT_ERROR, f"{name}: {message}")
    retry_after = None
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "headers", None):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    return UpstreamFailure(
        outcome_for_status(status), f"HTTP {status}: {message}", status=status,
        retry_after_s=retry_after,
    )  # fmt: skip


def litellm_price(litellm_provider: str | None, model: str) -> tuple[float, float] | None:
    """USD per token (prompt, completion) of `model` in litellm's bundled price map, or None
    when the map does not know it. Imports litellm (seconds, the first time): call it off the
    event loop, and only for a pair that needs it."""
    cost_map: Any = getattr(_litellm(), "model_cost", {})
    names = [f"{litellm_provider}/{model}", model] if litellm_provider else [model]
    for name in names:
        entry = cost_map.get(name)
        if isinstance(entry, dict):
            prompt = entry.get("input_cost_per_token")
            completion = entry.get("output_cost_per_token")
            if isinstance(prompt, int | float) and isinstance(completion, int | float):
                return float(prompt), float(completion)
    return None
