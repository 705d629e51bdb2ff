"""The OpenAI surface: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

A request is parsed once (orjson) and only what routing needs is checked: the model, the
stream flag, the field that carries the prompt. Everything else passes upstream untouched.
The response is a `DispatchResponse`, which runs dispatch inside the ASGI call so that a
client leaving at any moment (even during a 60 s cold start) cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from proxy import requestid
from proxy.api.auth import require_key
from proxy.api.context import Services, services
from proxy.api.steer import route_request
from proxy.dispatch import Call, Dispatcher, Kind
from proxy.domain import Decision
from proxy.errors import (
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    ProxyError,
)
from proxy.measure import estimate_prompt_tokens

log = logging.getLogger("ttft_router.api")
router = APIRouter()

# The POST routes that `app.ProxyApp` serves straight from ASGI (see `serve_direct`).
DIRECT_ROUTES: dict[str, Kind] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
}

PROMPT_FIELD: dict[Kind, tuple[str, type | tuple[type, ...]]] = {
    "chat": ("messages", list),
    "completion": ("prompt", (str, list)),
    "embedding": ("input", (str, list)),
}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _proxy(request, "chat")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _proxy(request, "completion")


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    return await _proxy(request, "embedding")


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    svc = services(request)
    authenticate(svc, request)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "ttft-router"}
        for name in svc.deployments
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def serve_direct(scope: Scope, receive: Receive, send: Send, kind: Kind) -> None:
    """One /v1 POST as a plain ASGI call, without FastAPI's middleware, routing and
    dependency machinery in front of it and around every streamed chunk (measured at about
    a fifth of the proxy's CPU per streamed request; docs/performance.md). Errors leave in
    the same OpenAI shape, logged once, as through the app's exception handlers."""
    request = Request(scope, receive)
    try:
        response = await _proxy(request, kind)
    except ProxyError as exc:
        log.log(exc.log_level, "POST %s -> %s %s: %s", scope["path"], exc.status, exc.code,
                exc.message)  # fmt: skip
        await send_error(send, exc)
        return
    except ClientDisconnect:
        log.info("client went away while sending its request to POST %s", scope["path"])
        return
    except Exception:
        log.exception("unhandled error on POST %s", scope["path"])
        await send_error(send, ProxyError("internal error in ttft-router; see its log"))
        return
    await response(scope, receive, send)


def authenticate(svc: Services, request: Request) -> None:
    if svc.config.auth.allow_unauthenticated and not svc.client_keys:
        return
    require_key(svc.client_keys, request, "API key")


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
    field, types = PROMPT_FIELD[kind]
    if not isinstance(body.get(field), types):
        raise InvalidRequest(f"'{field}' is required for this endpoint", param=field)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    return body


async def _proxy(request: Request, kind: Kind) -> Response:
    svc = services(request)
    authenticate(svc, request)
    raw = await read_body(request, svc.config.server.max_body_bytes)
    body = parse_request(raw, kind)
    model = body["model"]
    deployments = svc.deployments.get(model)
    if deployments is None:
        known = ", ".join(svc.deployments)
        raise ModelNotFound(f"model '{model}' is not configured (known: {known})", param="model")
    policy = svc.policies.current.for_model(model)
    now = time.time()
    # routing, shaped by the request's controls and the policy (removes body["provider"])
    route = route_request(svc, policy, model, deployments, body, request.scope["headers"], now)
    decision = Decision(
        id=f"{random.getrandbits(64):016x}",  # no syscall per request (os.urandom)
        model=model,
        timestamp=now,
        ranked=route.ranked,
        excluded=route.excluded,
        reason=route.explanation,
        replica=svc.replica,
        kind=route.kind,
        request_id=requestid.current() or "",
        controls=route.shaped_by,
    )
    stream = bool(body.get("stream")) and kind != "embedding"
    call = Call(kind, model, body, stream, estimate_prompt_tokens(len(raw)), decision, policy)
    call.meter, call.bind = route.meter, route.bind
    return DispatchResponse(svc.dispatcher, call, svc)


# A request still running after this long gets a task watching for its client's disconnect
# (which then cancels it, and with it the upstream request). Shorter ones never pay for a
# task (~10 us, cachegrind: ~5% of a short streamed request); a client leaving in the first
# WATCH_AFTER_S is noticed when the watcher starts, still well within a second.
WATCH_AFTER_S = 0.25


class DispatchResponse(Response):
    """Runs dispatch inside the ASGI call, racing it against the client's disconnect."""

    def __init__(self, dispatcher: Dispatcher, call: Call, svc: Services) -> None:
        self._dispatcher = dispatcher
        self._call = call
        self._svc = svc
        self._client_gone = False
        self._watcher: asyncio.Task[None] | None = None
        self.status_code = 200
        self.background = None

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
            log.log(exc.log_level, "%s %s: %s", exc.status, exc.code, exc.message)
            await send_error(send, exc)
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
        if cost is not None:  # known before the body: usage x price (docs/cost.md)
            headers.append((b"x-ttft-router-cost-usd", f"{cost:.10f}".encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})


async def send_error(send: Send, exc: ProxyError) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
    request_id = requestid.current()
    if request_id is not None:
        headers.append((requestid.HEADER_BYTES, request_id.encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(exc.body())})
