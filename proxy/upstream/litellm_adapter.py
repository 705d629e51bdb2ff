"""Providers that do not speak OpenAI's protocol, through litellm (imported lazily).

litellm takes ~4 s to import and tries to download its price map at import time, so it is
imported inside `_litellm()` only, the first time such a provider is used, with
LITELLM_LOCAL_MODEL_COST_MAP=True so it uses the map it ships with. Its chunks are turned
back into OpenAI SSE bytes, so dispatch and measurement treat every provider alike; its
exceptions become UpstreamFailure here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from proxy.config import LiteLLMProvider
from proxy.domain import Outcome
from proxy.upstream.base import UpstreamFailure, outcome_for_status, parse_retry_after

DONE_EVENT = b"data: [DONE]\n\n"


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


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


class LiteLLMUpstream:
    def __init__(self, name: str, config: LiteLLMProvider) -> None:
        self.name = name
        self._config = config

    @asynccontextmanager
    async def open(self, path: str, body: bytes, *, stream: bool) -> AsyncIterator[LiteLLMResponse]:
        litellm = _litellm()
        request = orjson.loads(body)
        model = f"{self._config.litellm_provider}/{request.pop('model')}"
        kwargs = self._kwargs()
        try:
            if path == "/embeddings":
                result = await litellm.aembedding(model=model, **request, **kwargs)
            elif path == "/chat/completions":
                result = await litellm.acompletion(model=model, **request, **kwargs)
            else:
                result = await litellm.atext_completion(model=model, **request, **kwargs)
        except Exception as exc:
            raise _translate(exc) from exc
        try:
            yield LiteLLMResponse(result, stream)
        finally:
            close = getattr(result, "aclose", None)
            if close is not None:
                await close()

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
    status = getattr(exc, "status_code", None)
    message = str(exc)[:300]
    name = type(exc).__name__
    if "Timeout" in name:
        return UpstreamFailure(Outcome.TIMEOUT, f"timed out: {message}")
    if "APIConnectionError" in name or not isinstance(status, int):
        return UpstreamFailure(Outcome.CONNECT_ERROR, f"{name}: {message}")
    retry_after = None
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "headers", None):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    return UpstreamFailure(
        outcome_for_status(status), f"HTTP {status}: {message}", status=status,
        retry_after_s=retry_after,
    )  # fmt: skip
