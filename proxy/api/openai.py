"""The OpenAI surface: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses,
/v1/models and /v1/models/{model}.

A request is parsed once (orjson) and only what routing needs is checked: the model, the
stream flag, the field that carries the prompt. Everything else passes upstream untouched.
/v1/responses goes through the same routing, dispatch and measurement as chat; only the
providers whose config says `responses: true` are tried, the others are excluded in the
decision with that reason.
The response is a `DispatchResponse`, which runs dispatch inside the ASGI call so that a
client leaving at any moment (even during a 60 s cold start) cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.context import Services, client, deployments_of
from proxy.api.errors import render_error, render_unexpected
from proxy.api.steer import route_request
from proxy.core import requestid
from proxy.core.domain import Candidate, Decision, LazyText
from proxy.core.errors import InvalidRequest, MethodNotAllowed, PayloadTooLarge, ProxyError
from proxy.serving.dispatch import Call, Dispatcher, Kind
from proxy.settings.config import OpenAIProvider
from proxy.upstream.measure import estimate_prompt_tokens

log = logging.getLogger("ttft_router.api")
router = APIRouter()

# The POST routes that `app.ProxyApp` serves straight from ASGI (see `serve_direct`).
DIRECT_ROUTES: dict[str, Kind] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
    "/v1/responses": "responses",
}

# kind -> (the field carrying the prompt, its types, whether it is required). A Responses
# request may have no `input` (a stored `prompt` template, `previous_response_id`).
PROMPT_FIELD: dict[Kind, tuple[str, type | tuple[type, ...], bool]] = {
    "chat": ("messages", list, True),
    "completion": ("prompt", (str, list), True),
    "embedding": ("input", (str, list), True),
    "responses": ("input", (str, list), False),
}
NO_RESPONSES_API = "does not serve the Responses API (its config has responses: false)"


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    svc = client(request)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "ttft-router"}
        for name in svc.deployments
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@router.get("/v1/models/{model:path}")
async def retrieve_model(request: Request, model: str) -> Response:
    svc = client(request)
    deployments_of(svc, model)  # 404 model_not_found, OpenAI-shaped
    entry = {"id": model, "object": "model", "created": 0, "owned_by": "ttft-router"}
    return Response(orjson.dumps(entry), media_type="application/json")


async def serve_direct(scope: Scope, receive: Receive, send: Send, kind: Kind) -> None:
    """One /v1 POST as a plain ASGI call, without FastAPI's middleware, routing and
    dependency machinery in front of it and around every streamed chunk (measured at about
    a fifth of the proxy's CPU per streamed request; docs/performance.md). These paths are
    not registered with FastAPI: this is their only way in. Errors leave through the same
    `render_error` as FastAPI's handlers use."""
    request = Request(scope, receive)
    path = scope["path"]
    if scope["method"] != "POST":
        error = MethodNotAllowed(f"{scope['method']} {path}: use POST", allow="POST")
        await render_error(error, scope["method"], path)(scope, receive, send)
        return
    try:
        response: ASGIApp = await _proxy(request, kind)
    except ProxyError as exc:
        response = render_error(exc, "POST", path)
    except ClientDisconnect:
        log.info("client went away while sending its request to POST %s", path)
        return
    except Exception:
        response = render_unexpected("POST", path)
    await response(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, straight from ASGI `receive` (no per-request generator).
    Raises PayloadTooLarge past `limit` bytes, ClientDisconnect if the client left."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit}")
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_request(raw: bytes, kind: Kind) -> dict[str, Any]:
    """The client's JSON object, checked only for what routing needs."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    field, types, required = PROMPT_FIELD[kind]
    if (required or field in body) and not isinstance(body.get(field), types):
        raise InvalidRequest(f"'{field}' is required for this endpoint", param=field)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    return body


async def _proxy(request: Request, kind: Kind) -> DispatchResponse:
    svc = client(request)
    raw = await read_body(request, svc.config.server.max_body_bytes)
    body = parse_request(raw, kind)
    model = body["model"]
    deployments = deployments_of(svc, model)
    policy = svc.policies.current.for_model(model)
    policy.limits.check(body, kind)  # n, max_tokens, top_logprobs: 400 past the policy's caps
    now = time.time()
    if kind == "responses" and not any(serves_responses(svc, p) for p, _ in deployments):
        raise InvalidRequest(
            f"model '{model}' has no provider serving the Responses API (providers: "
            f"{', '.join(p for p, _ in deployments)}; set responses: true on those that do)",
            param="model",
        )
    # routing, shaped by the request's controls and the policy (removes body["provider"])
    headers = request.scope["headers"]
    route = route_request(svc, policy, model, deployments, body, headers, now, kind)
    ranked, excluded, reason = route.ranked, route.excluded, route.reason
    candidates = route.candidates  # the ranking's own rendering, while the lists are its own
    if kind == "responses":
        ranked, excluded, reason = _responses_only(svc, ranked, excluded, reason)
        if ranked is not route.ranked:
            candidates = None
    decision = Decision(
        id=f"{random.getrandbits(64):016x}",  # no syscall per request (os.urandom)
        model=model,
        timestamp=now,
        ranked=ranked,
        excluded=excluded,
        reason=reason,
        replica=svc.replica,
        kind=route.kind,
        request_id=requestid.current() or "",
        controls=route.shaped_by,
        candidates=candidates,
    )
    stream = bool(body.get("stream")) and kind != "embedding"
    call = Call(kind, model, body, stream, estimate_prompt_tokens(len(raw)), decision, policy)
    call.meter, call.bind = route.meter, route.bind
    return DispatchResponse(svc.dispatcher, call, svc)


def serves_responses(svc: Services, provider: str) -> bool:
    """Whether the provider's config says it serves the Responses API (litellm: never)."""
    config = svc.config.providers[provider]
    return isinstance(config, OpenAIProvider) and config.responses


def _responses_only(
    svc: Services,
    ranked: tuple[Candidate, ...],
    excluded: tuple[Candidate, ...],
    reason: LazyText,
) -> tuple[tuple[Candidate, ...], tuple[Candidate, ...], LazyText]:
    """The route without the candidates that do not serve the Responses API: those move to
    the excluded ones with that reason (new lists: the ranking's are shared)."""
    serving = tuple(c for c in ranked if serves_responses(svc, c.provider))
    if len(serving) == len(ranked):
        return ranked, excluded, reason
    skipped = [
        replace(c, excluded_because=NO_RESPONSES_API)
        for c in ranked
        if not serves_responses(svc, c.provider)
    ]
    names = ", ".join(c.provider for c in skipped)
    text = LazyText(lambda: f"{reason}; for /v1/responses, not tried: {names} "
                            f"({NO_RESPONSES_API})")  # fmt: skip
    return serving, (*excluded, *skipped), text


# A request still running after this long gets a task watching for its client's disconnect
# (which then cancels it, and with it the upstream request). Shorter ones never pay for a
# task (~10 us, cachegrind: ~5% of a short streamed request); a client leaving in the first
# WATCH_AFTER_S is noticed when the watcher starts, still well within a second.
WATCH_AFTER_S = 0.25


class DispatchResponse:
    """An ASGI app (not a starlette Response): runs dispatch inside the ASGI call, racing it
    against the client's disconnect, and sends the answer or the error."""

    def __init__(self, dispatcher: Dispatcher, call: Call, svc: Services) -> None:
        self._dispatcher = dispatcher
        self._call = call
        self._svc = svc
        self._client_gone = False
        self._watcher: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        later = asyncio.get_running_loop().call_later(
            WATCH_AFTER_S, self._start_watch, receive, task
        )
        status = 200
        try:
            if self._call.stream:
                await self._send_stream(send)
            else:
                await self._send_whole(send)
        except ProxyError as exc:
            status = exc.status
            await render_error(exc, "POST", scope["path"])(scope, receive, send)
        except asyncio.CancelledError:
            if not self._client_gone:
                raise
            task.uncancel()
            status = 499
            log.info("client went away: decision %s cancelled", self._call.decision.id)
        finally:
            later.cancel()
            if self._watcher is not None:
                self._watcher.cancel()
            self._svc.metrics.count_request(self._call.model, status)

    def _start_watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._watcher = asyncio.create_task(self._watch(receive, task))

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self._client_gone = True
                task.cancel()
                return

    def _response_headers(self, provider: str, content_type: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", content_type),
            (b"x-ttft-router-provider", provider.encode()),
            (b"x-ttft-router-decision-id", self._call.decision.id.encode()),
            (b"x-ttft-router-attempts", str(len(self._call.decision.attempts)).encode()),
            (requestid.HEADER_BYTES, self._call.decision.request_id.encode()),
        ]

    async def _send_stream(self, send: Send) -> None:
        started = await self._dispatcher.start(self._call)
        headers = self._response_headers(started.candidate.provider, b"text/event-stream")
        headers.append((b"cache-control", b"no-cache"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await self._dispatcher.relay(self._call, started, emit)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_whole(self, send: Send) -> None:
        started, payload = await self._dispatcher.complete(self._call)
        headers = self._response_headers(started.candidate.provider, b"application/json")
        cost = self._call.decision.cost_usd
        if cost is not None and self._svc.config.server.cost_header:  # usage x price
            headers.append((b"x-ttft-router-cost-usd", f"{cost:.10f}".encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
