"""The OpenAI surface: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses,
/v1/models, /v1/models/{model} and (when the config lets clients see it) OpenRouter's
/v1/models/{model}/endpoints.

A request is parsed once (orjson) and only what routing needs is checked: the model, the
stream flag, the field that carries the prompt (the endpoint value, serving.endpoint, says
which). /v1/responses goes through the same routing, dispatch and measurement as chat; the
providers that do not serve it are excluded in the decision with that reason.
The response is a `DispatchResponse`, which runs dispatch inside the ASGI call so that a
client leaving at any moment (even during a 60 s cold start) cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api import controls
from proxy.api.context import Services, authenticate_client, services
from proxy.api.errors import render_error, render_unexpected
from proxy.api.published import endpoints_of
from proxy.clients import Client, Ticket, permissions
from proxy.clients.refusals import rate_headers
from proxy.core import requestid
from proxy.core.domain import Decision
from proxy.core.errors import (
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProxyError,
)
from proxy.routing import RouteRequest
from proxy.serving import fields
from proxy.serving.call import Call
from proxy.serving.dispatch import Dispatcher
from proxy.serving.endpoint import Endpoint
from proxy.serving.metering import meter_for
from proxy.upstream.measure import estimate_prompt_tokens

log = logging.getLogger("ttft_router.api")
router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """The models this client may use (a client limited to some models sees only those)."""
    svc, client = authenticate_client(request)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "ttft-router"}
        for name in permissions.visible(client, svc.pairs)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


# Registered before /v1/models/{model:path}, which would otherwise take "m/endpoints" for a
# model's name.
@router.get("/v1/models/{model:path}/endpoints")
async def list_endpoints(request: Request, model: str) -> Response:
    """OpenRouter's per-provider figures of `model` (api.published), when the config's
    `client_stats.enabled` lets clients see them; otherwise no such route (404)."""
    svc = services(request)
    if not svc.config.client_stats.enabled:
        raise NotFound(f"no route GET {request.url.path}")
    _, client = authenticate_client(request)
    permissions.model_pairs(client, svc.pairs, model)  # 404 model_not_found, OpenAI-shaped
    return Response(orjson.dumps(endpoints_of(svc, model)), media_type="application/json")


@router.get("/v1/models/{model:path}")
async def retrieve_model(request: Request, model: str) -> Response:
    svc, client = authenticate_client(request)
    permissions.model_pairs(client, svc.pairs, model)  # 404 model_not_found, OpenAI-shaped
    entry = {"id": model, "object": "model", "created": 0, "owned_by": "ttft-router"}
    return Response(orjson.dumps(entry), media_type="application/json")


async def serve_direct(scope: Scope, receive: Receive, send: Send, endpoint: Endpoint) -> None:
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
        response: ASGIApp = await _proxy(request, endpoint)
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


async def _proxy(request: Request, endpoint: Endpoint) -> DispatchResponse:
    svc, client = authenticate_client(request)
    raw = await read_body(request, svc.config.server.max_body_bytes)
    body = endpoint.parse(raw)
    model = body["model"]
    pairs = _permitted(svc, client, body, endpoint)
    policy = svc.policies.current.for_model(model)
    served_by = svc.served_by[endpoint.name]
    if served_by is not None and not served_by.intersection(pairs):
        raise InvalidRequest(
            f"model '{model}' has no provider serving {endpoint.route} (providers "
            f"{', '.join(pairs)}: each {endpoint.unserved_reason})",
            param="model",
        )
    now = time.time()
    allowed = permissions.allowed_controls(client, policy.client_controls)
    try:
        given = controls.parse(body, request.scope["headers"], policy, pairs, allowed)
    except PermissionDenied:
        svc.gate.refused(client, "control")
        raise
    admitted = fields.admit(body, endpoint, policy.fields, svc.extra_fields, pairs)
    prompt_tokens = estimate_prompt_tokens(len(raw) - admitted.media_bytes)
    tokens = permissions.estimate_tokens(body, prompt_tokens, endpoint.limited)
    ticket = await svc.gate.admit(client, tokens)  # 429 over a limit or the budget
    try:
        plan = svc.routing.plan(
            RouteRequest(model, now, given, served_by, endpoint.unserved_reason, prompt_tokens)
        )
        decision = Decision(
            id=f"{random.getrandbits(64):016x}",  # no syscall per request (os.urandom)
            model=model,
            timestamp=now,
            ranked=plan.ranked,
            excluded=plan.excluded,
            reason=plan.reason,
            replica=svc.replica,
            verdict=plan.verdict,
            request_id=requestid.current() or "",
            controls=plan.shaped_by,
            candidates=plan.candidates,
            client=client.name,
        )
        meter = meter_for(svc.pricing.for_model(model), body, endpoint.usage_in_stream,
                          client.counts_tokens)  # fmt: skip
        call = Call(
            endpoint, model, body, endpoint.is_streamed(body), prompt_tokens,
            decision, policy, meter, plan.affinity_key, plan.blocked, admitted, plan.steered,
        )  # fmt: skip
    except BaseException:
        await svc.gate.charge(ticket, 0, 0.0)  # admitted, never sent: free its slot
        raise
    return DispatchResponse(svc.dispatcher, call, svc, ticket)


def _permitted(
    svc: Services, client: Client, body: dict[str, Any], endpoint: Endpoint
) -> Mapping[str, str]:
    """The model's pairs, if the client may use the model and the request stays within the
    policy's and the client's caps (n, max_tokens...). Raises ModelNotFound (the same 404
    for a model the client may not use as for one nobody configured), InvalidRequest."""
    model = body["model"]
    try:
        pairs = permissions.model_pairs(client, svc.pairs, model)
    except ModelNotFound:
        svc.gate.refused(client, "model")
        raise
    policy = svc.policies.current.for_model(model)
    policy.limits.check(body, endpoint.limited)  # n, max_tokens, top_logprobs: 400 past caps
    if client.max_tokens is not None or client.max_n is not None:
        try:
            permissions.check_caps(client, body, endpoint.limited)
        except InvalidRequest:
            svc.gate.refused(client, "caps")
            raise
    return pairs


# A request still running after this long gets a task watching for its client's disconnect
# (which then cancels it, and with it the upstream request). Shorter ones never pay for a
# task (~10 us, cachegrind: ~5% of a short streamed request); a client leaving in the first
# WATCH_AFTER_S is noticed when the watcher starts, still well within a second.
WATCH_AFTER_S = 0.25


class DispatchResponse:
    """An ASGI app (not a starlette Response): runs dispatch inside the ASGI call, racing it
    against the client's disconnect, and sends the answer or the error."""

    def __init__(self, dispatcher: Dispatcher, call: Call, svc: Services, ticket: Ticket) -> None:
        self._dispatcher = dispatcher
        self._call = call
        self._svc = svc
        self._ticket = ticket
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
            await self._settle()
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

    async def _settle(self) -> None:
        """Charge the client with what the request used (once; before the answer's last
        bytes, so its concurrency slot is free when the client can ask again): the answer's
        reported tokens (else the estimate; none without an answer) and what it cost."""
        ticket, call = self._ticket, self._call
        if ticket.is_charged:
            return
        tokens = ticket.tokens if call.decision.winner is not None else 0
        usage = call.meter.tap.usage if call.meter is not None else None
        if usage is not None and usage.prompt_tokens is not None:
            tokens = usage.prompt_tokens + (usage.completion_tokens or 0)
        await self._svc.gate.charge(ticket, tokens, call.decision.charged_usd or 0.0)

    def _response_headers(self, provider: str, content_type: bytes) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", content_type),
            (b"x-ttft-router-provider", provider.encode()),
            (b"x-ttft-router-decision-id", self._call.decision.id.encode()),
            (b"x-ttft-router-attempts", str(len(self._call.decision.attempts)).encode()),
            (requestid.HEADER_BYTES, self._call.decision.request_id.encode()),
        ]
        ticket = self._ticket
        if self._svc.config.auth.client_header:
            headers.append((b"x-ttft-router-client", ticket.client.name.encode()))
        if ticket.use is not None and ticket.client.limits is not None:
            headers += rate_headers(ticket.client.limits, ticket.use)
        return headers

    async def _send_stream(self, send: Send) -> None:
        started = await self._dispatcher.start(self._call)
        headers = self._response_headers(started.candidate.provider, b"text/event-stream")
        headers.append((b"cache-control", b"no-cache"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await self._dispatcher.relay(self._call, started, emit)
        await self._settle()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_whole(self, send: Send) -> None:
        started, payload = await self._dispatcher.complete(self._call)
        await self._settle()
        headers = self._response_headers(started.candidate.provider, b"application/json")
        cost = self._call.decision.cost_usd
        if cost is not None and self._svc.config.server.cost_header:  # usage x price
            headers.append((b"x-ttft-router-cost-usd", f"{cost:.10f}".encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
