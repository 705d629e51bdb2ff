"""Request ids: one per client request, in its response header, decision, log lines and errors.

A client's own `x-request-id` is kept when it is safe to echo and to log (1 to 128 characters
of `[A-Za-z0-9._-]`); otherwise, or when it sent none, the proxy makes one. The id lives in a
context variable for the duration of the request (`app.ProxyApp` sets it), so every log line
written while the request runs carries it (`logs.JsonFormatter`) without being passed along.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Message, Send

HEADER = "x-request-id"
HEADER_BYTES = HEADER.encode()
MAX_LENGTH = 128
_SAFE = re.compile(rb"[A-Za-z0-9._-]{1,%d}" % MAX_LENGTH)

REQUEST_ID: ContextVar[str | None] = ContextVar("ttft_router_request_id", default=None)
# The name of the request's client (proxy.clients), once its key is checked: in every log
# line written while the request runs, like the request id.
CLIENT: ContextVar[str | None] = ContextVar("ttft_router_client", default=None)


def current() -> str | None:
    """The id of the request being served in this context, None outside any request."""
    return REQUEST_ID.get()


def new_id() -> str:
    # An identifier, not a secret: no syscall per request (os.urandom), like decision ids.
    return f"{random.getrandbits(96):024x}"


def from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's x-request-id if it is safe to echo and log, else a new one."""
    for name, value in headers:
        if name.lower() == HEADER_BYTES:  # servers send them lowercase; ASGI does not insist
            if _SAFE.fullmatch(value):
                return value.decode("ascii")
            break
    return new_id()


def with_header(send: Send, request_id: str) -> Send:
    """`send`, adding x-request-id to the response start (unless the route set it already)."""
    value = request_id.encode()

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(k.lower() == HEADER_BYTES for k, _ in headers):
                headers.append((HEADER_BYTES, value))
            message = {**message, "headers": headers}
        await send(message)

    return sending
