"""A scripted OpenAI-compatible provider: a real aiohttp server on 127.0.0.1 that records
every request it gets (path, headers, JSON body) and answers as its `mode` says, which a
test may change while it runs. Streams real SSE (a role-only chunk, content chunks,
[DONE]).

Modes: "ok"; "500", "401", "400" (an error whose message quotes every header value it was
sent, as leaky providers do); "error-before" (an SSE error event before any output, quoting
the headers); "error-after" (one content chunk, then such an error event); "429" (a rate
limit with `retry_after` as its Retry-After); "429-too-large" (OpenAI's 429 for one request
above the tokens-per-minute limit); "filtered-before" (an SSE error event before any output
that blames the request: invalid_request_error, content_filter). POST
/v1/responses answers the same modes in the Responses API's shape (typed events: an `error`
event before any output, a `response.failed` after one delta). `delay_s` delays every
answer; a client that leaves during it is counted in `aborted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.helpers import bound_socket


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ScriptedProvider:
    mode: str = "ok"
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    delay_s: float = 0.0  # before answering, whatever the mode
    aborted: int = 0  # requests whose client closed the connection during the delay
    chunk_delay_s: float = 0.0  # "ok" streams: after the first content chunk, before the rest
    retry_after: str = "1"  # the "429" modes' Retry-After

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def leak(self, request: web.Request) -> str:
        quoted = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        return f"Incorrect API key provided. We saw: {quoted}. Served by {self.base_url}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Seen(request.path, dict(request.headers), body))
        mode = self.mode
        if self.delay_s:
            try:
                await asyncio.sleep(self.delay_s)
            except asyncio.CancelledError:
                self.aborted += 1
                raise
            if request.transport is None or request.transport.is_closing():
                self.aborted += 1
                return web.Response(status=499)
        if mode in ("500", "401", "400"):
            error = {"error": {"message": self.leak(request), "type": "x", "code": None}}
            return web.json_response(error, status=int(mode))
        if mode in ("429", "429-too-large"):
            message = (
                "Request too large for u on tokens per min (TPM): Limit 30000, Requested 41000."
                if mode == "429-too-large"
                else "Rate limit reached for u on requests per min (RPM): Limit 3, Used 3."
            )
            error = {"error": {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}}
            headers = {"Retry-After": self.retry_after}
            return web.json_response(error, status=429, headers=headers)
        model = body.get("model", "m")
        if request.path.endswith("/responses"):
            return await self._responses(request, model, bool(body.get("stream")), mode)
        if not body.get("stream"):
            return web.json_response(_whole(model))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_event(_chunk(model, {"role": "assistant", "content": ""})))
        if mode == "error-before":
            await response.write(_event({"error": {"message": self.leak(request)}}))
            return response
        if mode == "filtered-before":
            error = {"message": "The prompt was filtered.", "type": "invalid_request_error",
                     "code": "content_filter", "param": "messages"}  # fmt: skip
            await response.write(_event({"error": error}))
            return response
        await response.write(_event(_chunk(model, {"content": "hello"})))
        if self.chunk_delay_s:
            await asyncio.sleep(self.chunk_delay_s)
        if mode == "error-after":
            await response.write(_event({"error": {"message": self.leak(request)}}))
            return response
        await response.write(_event(_chunk(model, {"content": " world"}, finish="stop")))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _responses(
        self, request: web.Request, model: str, stream: bool, mode: str
    ) -> web.StreamResponse:
        if not stream:
            return web.json_response(_response(model, "completed"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_typed({"type": "response.created",
                                     "response": _response(model, "in_progress")}))  # fmt: skip
        if mode == "error-before":
            error = {"type": "error", "code": "x", "message": self.leak(request), "param": None}
            await response.write(_typed(error))
            return response
        await response.write(_typed({"type": "response.output_text.delta", "item_id": "msg_1",
                                     "output_index": 0, "content_index": 0,
                                     "delta": "hello"}))  # fmt: skip
        if mode == "error-after":
            failed = _response(model, "failed")
            failed["error"] = {"code": "server_error", "message": self.leak(request)}
            await response.write(_typed({"type": "response.failed", "response": failed}))
            return response
        await response.write(_typed({"type": "response.completed",
                                     "response": _response(model, "completed")}))  # fmt: skip
        return response


def _response(model: str, status: str) -> dict[str, Any]:
    """A Responses API response object (what `response.*` events carry)."""
    text = {"type": "output_text", "text": "hello world", "annotations": []}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [text]}  # fmt: skip
    return {
        "id": "resp_1", "object": "response", "created_at": 1, "model": model,
        "status": status, "error": None, "output": [message] if status == "completed" else [],
        "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
    }  # fmt: skip


def _typed(payload: dict[str, Any]) -> bytes:
    """A Responses API event: its type as the SSE event name too."""
    return f"event: {payload['type']}\n".encode() + _event(payload)


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip


def _whole(model: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": "hello world"}
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }  # fmt: skip


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@contextlib.asynccontextmanager
async def scripted_provider(mode: str = "ok") -> AsyncIterator[ScriptedProvider]:
    provider = ScriptedProvider(mode)
    async with serving(provider.handle) as url:
        provider.url = url
        yield provider


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, path: str = "/v1/{tail:.*}", method: str = "POST"
) -> AsyncIterator[str]:
    """`handler` answering `method` `path` on a real aiohttp server on 127.0.0.1; yields its
    URL (`http://127.0.0.1:<port>`)."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    sock = bound_socket()
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
