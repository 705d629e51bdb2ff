"""When and how an answer reaches the client, or fails to.

Owns the timing of one request: the role-only first chunk at once, the wait for a slot
(queueing), the TTFT (warm or cold), tokens at the model's rate; the injected faults (500,
429 with ``Retry-After``, drop mid-stream, hang, refused: the connection closed before any
answer); and the counting of completed requests and
of clients that went away (``aborted``). Gets the bytes ready-made from ``wire`` and the
decisions from ``engine``.

A client that leaves while something is being written shows up as ``ConnectionResetError``;
one that leaves while nothing is (during the TTFT, or a hang) as cancellation, which needs
the application run with ``handler_cancellation=True``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from aiohttp import web

from proxy.simulator import wire
from proxy.simulator.engine import Draw, Fault, ModelEngine


class Reject(Exception):
    """A request answered with an OpenAI-shaped error instead of output."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = wire.error_body(message, type_, param, code)
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The error as a JSON response."""
        return web.Response(
            status=self.status,
            body=self.body,
            content_type="application/json",
            headers=self.headers,
        )


@dataclass(frozen=True)
class Answer:
    """A ready answer: the whole JSON ``body``, or the stream ``frames`` when streaming.

    ``output_steps`` is how many token intervals the output spans (for the non-stream wait);
    ``prompt_tokens`` the prompt's size (its prefill adds to TTFT at the model's rate).
    """

    body: bytes
    frames: wire.Frames | None
    output_steps: int
    prompt_tokens: int = 0


async def deliver(
    request: web.Request, engine: ModelEngine, answer: Answer, *, is_stream: bool
) -> web.StreamResponse:
    """Serve ``answer`` to ``request`` with the model's timing and faults; count the outcome.

    Raises ``Reject`` for an injected 500 or 429.
    """
    with engine.request():
        draw = engine.draw()
        if draw.fault is Fault.REFUSED:
            engine.record_fault(draw.fault)
            return _close(request, web.Response())
        if draw.fault is Fault.ERROR_500 or draw.fault is Fault.ERROR_429:
            engine.record_fault(draw.fault)
            raise _injected_error(engine, draw)
        try:
            if is_stream and answer.frames is not None:
                return await _stream(request, engine, draw, answer)
            return await _respond(request, engine, draw, answer)
        except asyncio.CancelledError:
            engine.record_aborted()
            raise


def _injected_error(engine: ModelEngine, draw: Draw) -> Reject:
    if draw.fault is Fault.ERROR_429:
        retry_after_s = engine.retry_after_s(draw)
        headers = {
            # Retry-After is whole seconds in HTTP; retry-after-ms keeps a scaled value exact.
            "Retry-After": str(max(1, math.ceil(retry_after_s))),
            "retry-after-ms": str(round(retry_after_s * 1000)),
        }
        return Reject(
            429,
            "Rate limit reached (simulated).",
            "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    message = "The server had an error while processing your request (simulated)."
    return Reject(500, message, "server_error")


async def _stream(
    request: web.Request, engine: ModelEngine, draw: Draw, answer: Answer
) -> web.StreamResponse:
    frames = answer.frames
    assert frames is not None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
        await response.write(frames.head)
        async with engine.slot(draw) as admission:
            await _hang_if(engine, draw)
            await asyncio.sleep(admission.ttft_s + engine.prefill_s(draw, answer.prompt_tokens))
            for k, step in enumerate(frames.steps):
                if k:
                    await asyncio.sleep(engine.token_interval_s(draw))
                await response.write(step)
                if draw.fault is Fault.DROP:
                    return _drop(request, engine, response)
            if draw.fault is Fault.DROP:  # an answer without output: drop before the end
                return _drop(request, engine, response)
            await response.write(frames.tail)
            await response.write_eof()
    except ConnectionResetError:
        engine.record_aborted()
        return response
    engine.record_completed()
    return response


async def _respond(
    request: web.Request, engine: ModelEngine, draw: Draw, answer: Answer
) -> web.StreamResponse:
    async with engine.slot(draw) as admission:
        await _hang_if(engine, draw)
        generation_s = max(0, answer.output_steps - 1) * engine.token_interval_s(draw)
        prefill_s = engine.prefill_s(draw, answer.prompt_tokens)
        await asyncio.sleep(admission.ttft_s + prefill_s + generation_s)
        if draw.fault is Fault.DROP:
            return _drop(request, engine, web.Response())
    response = web.Response(body=answer.body, content_type="application/json")
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        engine.record_aborted()
        return response
    engine.record_completed()
    return response


async def _hang_if(engine: ModelEngine, draw: Draw) -> None:
    """For a hanging request, never return: it ends when the client goes away."""
    if draw.fault is Fault.HANG:
        engine.record_fault(Fault.HANG)
        await asyncio.get_running_loop().create_future()


def _drop(
    request: web.Request, engine: ModelEngine, response: web.StreamResponse
) -> web.StreamResponse:
    """Close the connection abruptly: no end of stream, no ``[DONE]``.

    aiohttp then fails to finish ``response`` on the closed transport and lets it go quietly.
    """
    engine.record_fault(Fault.DROP)
    return _close(request, response)


def _close(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.close()
    return response
