"""OpenAI-compatible providers over one shared, pooled aiohttp session.

aiohttp, not httpx: measured on this project's machines, a streaming pass-through on
httpx.AsyncClient sustained ~650 streamed requests/s and added ~400 ms p50 TTFT at 64
streams; the same on aiohttp's client ~4,800 requests/s and ~7 ms (the team's measurement
that chose the engine; not re-run in this repository).
aiohttp's exceptions are translated to UpstreamFailure here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from proxy.core.domain import Outcome
from proxy.core.errors import AnswerTooLarge
from proxy.settings.config import OpenAIProvider
from proxy.upstream.base import (
    MAX_ANSWER_BYTES,
    MAX_ERROR_READ,
    UpstreamFailure,
    outcome_for_status,
    status_failure,
)


def make_session() -> aiohttp.ClientSession:
    """The one client session of the process (built in the app's lifespan)."""
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
    )
    return aiohttp.ClientSession(connector=connector, auto_decompress=True)


class AiohttpResponse:
    __slots__ = ("_response", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    def chunks(self) -> AsyncIterator[bytes]:
        return _Chunks(self._response.content)

    async def read(self) -> bytes:
        """The whole body, at most MAX_ANSWER_BYTES of it (AnswerTooLarge past them)."""
        body = await _read_at_most(self._response, MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(
                f"the provider's answer passed {MAX_ANSWER_BYTES} bytes, the most a "
                "stream=false answer may hold: ask for less or stream it"
            )
        return body


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to `limit` bytes (the rest is not read: leaving drops the connection)."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit:
            data = await response.content.read(limit - size)
            if not data:
                break
            parts.append(data)
            size += len(data)
    except (aiohttp.ClientError, OSError) as exc:
        raise _translate(exc) from exc
    return b"".join(parts)


class _Chunks:
    """The body as it arrives, with aiohttp's errors translated.

    A class rather than an async generator: asyncio registers every async generator in a
    WeakSet on its first step and this is created once per request (see docs/performance.md).
    """

    __slots__ = ("_content",)

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            data = await self._content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            raise _translate(exc) from exc
        if not data:
            raise StopAsyncIteration
        return data


class OpenAICompatUpstream:
    """One provider. Holds its URL, headers and timeouts; borrows the shared session."""

    def __init__(self, name: str, config: OpenAIProvider, session: aiohttp.ClientSession) -> None:
        self.name = name
        self._base = config.url
        self._session = session
        headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key is not None:
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._headers = headers
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        t = config.timeouts
        # sock_connect, not connect: aiohttp arms a timer per request for `connect` (pool
        # wait + DNS + TCP); the pool is unbounded, and the first-token deadline bounds DNS.
        self._timeout = aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s)

    def open(self, path: str, body: bytes, *, stream: bool) -> _Opening:
        headers = self._stream_headers if stream else self._headers
        return _Opening(self._session, self._base + path, body, headers, self._timeout)

    async def close(self) -> None:
        """The session is shared and closed by its owner (the app)."""


class _Opening:
    """`async with upstream.open(...) as response`: the request is sent on entry; leaving
    releases the connection to the pool when the body was read to its end, and otherwise
    drops it, which aborts the upstream request (client gone, hedge loser, failure).

    A class rather than @asynccontextmanager (an async generator per request, see _Chunks).
    """

    __slots__ = ("_body", "_headers", "_response", "_session", "_timeout", "_url")

    def __init__(
        self, session: aiohttp.ClientSession, url: str, body: bytes,
        headers: dict[str, str], timeout: aiohttp.ClientTimeout,
    ) -> None:  # fmt: skip
        self._session = session
        self._url = url
        self._body = body
        self._headers = headers
        self._timeout = timeout
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> AiohttpResponse:
        try:
            # Never follow a redirect: the configured headers (a provider's key in
            # `x-api-key`, `api-key`...) would go wherever a 3xx points.
            response = await self._session.post(
                self._url, data=self._body, headers=self._headers, timeout=self._timeout,
                allow_redirects=False,
            )  # fmt: skip
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc) from exc
        self._response = response
        if 300 <= response.status < 400:
            self._finish()
            raise UpstreamFailure(
                outcome_for_status(response.status),
                f"HTTP {response.status}: a redirect (to {response.headers.get('Location')!r}), "
                "not followed: set the provider's base_url to where it points",
                status=response.status,
            )
        if response.status >= 300:
            try:
                error_body = await _read_at_most(response, MAX_ERROR_READ)
            except (TimeoutError, UpstreamFailure):
                error_body = b""
            finally:
                self._finish()
            raise status_failure(response.status, error_body, response.headers.get("Retry-After"))
        return AiohttpResponse(response)

    async def __aexit__(self, *exc_info: object) -> None:
        self._finish()

    def _finish(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        if response.content.at_eof():
            response.release()
        else:
            response.close()


def _translate(exc: BaseException) -> UpstreamFailure:
    """aiohttp's exceptions -> UpstreamFailure, narrowest type first."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamFailure(Outcome.TIMEOUT, f"timed out: {exc}".rstrip(": "))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure(Outcome.CONNECT_ERROR, f"cannot connect: {exc.os_error}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamFailure(Outcome.CONNECT_ERROR, "server disconnected")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamFailure(Outcome.CONNECT_ERROR, f"response broken off: {exc}")
    return UpstreamFailure(Outcome.CONNECT_ERROR, f"{type(exc).__name__}: {exc}")
