"""Every error response of every surface, in OpenAI's shape: `render_error` and the handlers.

One renderer for both ways a request is served: FastAPI's exception handlers (admin, health,
/v1 GETs, unknown routes) and the direct ASGI path of the /v1 POSTs (`api.openai`), so an
error has one body, one set of headers and one log line wherever it was raised.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy.core import requestid
from proxy.core.errors import InvalidRequest, NotFound, ProxyError

log = logging.getLogger("ttft_router.api")
INTERNAL = "internal error in ttft-router; see its log"


def render_error(exc: ProxyError, method: str, path: str) -> Response:
    """`exc` as its response (status, Retry-After, x-request-id, `{"error": {...}}`),
    logged once at its level."""
    log.log(exc.log_level, "%s %s -> %s %s: %s", method, path, exc.status, exc.code,
            exc.message)  # fmt: skip
    return _response(exc)


def render_unexpected(method: str, path: str) -> Response:
    """A 500 for an exception nothing expected; the traceback goes to the log (once)."""
    log.exception("unhandled error on %s %s", method, path)
    return _response(ProxyError(INTERNAL))


def _response(exc: ProxyError) -> Response:
    headers = exc.headers()
    request_id = requestid.current()
    if request_id is not None:
        headers[requestid.HEADER] = request_id
    return Response(
        orjson.dumps(exc.body()), status_code=exc.status, headers=headers,
        media_type="application/json",
    )  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI's own errors (422, 404, 405) and ours leave through `render_error`."""

    @app.exception_handler(ProxyError)
    async def proxy_error(request: Request, exc: ProxyError) -> Response:
        return render_error(exc, request.method, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        error = InvalidRequest(f"{where}: {first.get('msg', 'invalid request')}",
                               param=where or None)  # fmt: skip
        return render_error(error, request.method, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            error: ProxyError = NotFound(f"no route {request.method} {request.url.path}")
        else:
            error = InvalidRequest(f"{request.method} {request.url.path}: {exc.detail}")
            error.status = exc.status_code
        return render_error(error, request.method, request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return render_unexpected(request.method, request.url.path)
