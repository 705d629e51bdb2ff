"""One simulated provider as an aiohttp application speaking the OpenAI protocol.

Owns the routes (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/responses`` unless the scenario turns it off (then it is a 404, as at a provider
without the Responses API), ``/v1/models``, ``/stats``, ``/stats/reset``), authentication
by the provider's key, and OpenAI-shaped errors for bad keys, unknown models, malformed
bodies and unknown routes. A handler parses the body, builds the answer (``output`` says
what, ``wire`` how) and hands it to ``delivery``, which owns timing and faults.

Run the application with ``handler_cancellation=True`` (``Market`` and ``__main__`` do; so
does aiohttp's ``TestServer``): that is how a client that leaves while nothing is being
written (during the TTFT, or a hang) is seen and counted as ``aborted``.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from proxy.simulator import wire
from proxy.simulator.bodies import ChatBody, CompletionBody, EmbeddingBody, ResponsesBody
from proxy.simulator.delivery import Answer, Reject, deliver
from proxy.simulator.engine import ModelEngine
from proxy.simulator.output import count_words, embed, generate
from proxy.simulator.provider import SimulatedProvider
from proxy.simulator.scenario import ProviderScenario

DEFAULT_EMBEDDING_DIMENSIONS = 16
PROVIDER_KEY = web.AppKey("provider", SimulatedProvider)

Body = TypeVar("Body", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_provider_app(
    provider_name: str, provider_scenario: ProviderScenario, time_scale: float, seed: int
) -> web.Application:
    """An application for one provider; its state is ``app[PROVIDER_KEY]``."""
    app = web.Application(middlewares=[_openai_errors])
    app[PROVIDER_KEY] = SimulatedProvider(provider_name, provider_scenario, time_scale, seed)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    if provider_scenario.responses:
        app.router.add_post("/v1/responses", responses)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/stats/reset", reset_stats)
    return app


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Reject as reject:
        return reject.response()
    except web.HTTPException as exc:  # aiohttp's own 404 / 405 for unknown routes
        if exc.status < 400:
            raise
        type_ = "invalid_request_error" if exc.status < 500 else "server_error"
        message = f"{request.method} {request.path}: {exc.reason}"
        return Reject(exc.status, message, type_).response()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    provider = _authorize(request)
    body = await _parse(request, ChatBody)
    engine = _engine(provider, body.model)
    prompt = body.prompt()
    choices = [generate(prompt, index, body.ask()) for index in range(body.n)]
    env = _envelope(provider, "chatcmpl", body.model, body.include_usage)
    tokens = count_words(prompt)
    frames = wire.chat_frames(env, choices, tokens)
    single = wire.chat_response(env, choices, tokens)
    return await deliver(
        request, engine, Answer(single, frames, len(frames.steps), tokens), is_stream=body.stream
    )


async def completions(request: web.Request) -> web.StreamResponse:
    provider = _authorize(request)
    body = await _parse(request, CompletionBody)
    engine = _engine(provider, body.model)
    prompts = body.prompts()
    if not prompts:
        raise Reject(400, "prompt must not be empty.", "invalid_request_error", param="prompt")
    choices = [
        generate(prompt, p * body.n + j, body.ask())
        for p, prompt in enumerate(prompts)
        for j in range(body.n)
    ]
    prompt_tokens = sum(count_words(prompt) for prompt in prompts)
    env = _envelope(provider, "cmpl", body.model, body.include_usage)
    frames = wire.completion_frames(env, choices, prompt_tokens)
    single = wire.completion_response(env, choices, prompt_tokens)
    answer = Answer(single, frames, len(frames.steps), prompt_tokens)
    return await deliver(request, engine, answer, is_stream=body.stream)


async def responses(request: web.Request) -> web.StreamResponse:
    """The Responses API: one output item (a message, or the forced function call)."""
    provider = _authorize(request)
    body = await _parse(request, ResponsesBody)
    engine = _engine(provider, body.model)
    prompt = body.prompt()
    choice = generate(prompt, 0, body.ask())
    env = _envelope(provider, "resp", body.model, False)
    tokens = count_words(prompt)
    frames = wire.responses_frames(env, choice, tokens)
    single = wire.responses_response(env, choice, tokens)
    return await deliver(
        request, engine, Answer(single, frames, len(frames.steps), tokens), is_stream=body.stream
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    """One deterministic vector per input; the latency is the model's TTFT."""
    provider = _authorize(request)
    body = await _parse(request, EmbeddingBody)
    engine = _engine(provider, body.model)
    inputs = body.inputs()
    dimensions = body.dimensions or DEFAULT_EMBEDDING_DIMENSIONS
    data = []
    for index, text in enumerate(inputs):
        vector = embed(text, dimensions)
        encoded: list[float] | str = vector
        if body.encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_words(text) for text in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    payload = {"object": "list", "data": data, "model": body.model, "usage": usage}
    answer = Answer(orjson.dumps(payload), None, 1, tokens)
    return await deliver(request, engine, answer, is_stream=False)


async def list_models(request: web.Request) -> web.StreamResponse:
    provider = _authorize(request)
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": provider.name}
        for model in provider.engines
    ]
    return _json({"object": "list", "data": data})


async def get_stats(request: web.Request) -> web.StreamResponse:
    return _json(request.app[PROVIDER_KEY].stats())


async def reset_stats(request: web.Request) -> web.StreamResponse:
    provider = request.app[PROVIDER_KEY]
    provider.reset_stats()
    return _json(provider.stats())


def _json(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _authorize(request: web.Request) -> SimulatedProvider:
    provider = request.app[PROVIDER_KEY]
    if request.headers.get("Authorization") != f"Bearer {provider.scenario.api_key}":
        raise Reject(
            401,
            f"Incorrect API key provided for {provider.name}.",
            "invalid_request_error",
            code="invalid_api_key",
        )
    return provider


def _engine(provider: SimulatedProvider, model: str) -> ModelEngine:
    try:
        return provider.engines[model]
    except KeyError:
        known = ", ".join(provider.engines)
        raise Reject(
            404,
            f"The model '{model}' does not exist at {provider.name} (known: {known}).",
            "invalid_request_error",
            param="model",
            code="model_not_found",
        ) from None


def _envelope(
    provider: SimulatedProvider, prefix: str, model: str, include_usage: bool
) -> wire.Envelope:
    return wire.Envelope(
        id=provider.next_id(prefix),
        created=int(time.time()),
        model=model,
        system_fingerprint=provider.system_fingerprint,
        include_usage=include_usage,
    )


async def _parse(request: web.Request, body_type: type[Body]) -> Body:
    try:
        raw = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        message = f"Request body is not valid JSON: {exc}"
        raise Reject(400, message, "invalid_request_error", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise Reject(400, "Request body must be a JSON object.", "invalid_request_error")
    try:
        return body_type.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = f"{param}: {first['msg']}"
        raise Reject(400, message, "invalid_request_error", param=param) from None
