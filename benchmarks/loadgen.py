"""A lean streaming load client: raw asyncio protocol + httptools' response parser.

One keep-alive connection per concurrent stream, one request at a time on each. TTFT is
stamped inside `data_received` when the first SSE event carrying content (delta.content,
text, reasoning or tool calls) has been parsed -- not the headers, not the role-only first
chunk -- so the client adds as little as possible to what it measures. Total time ends with
the terminating chunk of the response. Every loop is bounded by a deadline and a count.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools
import orjson

REQUEST_TIMEOUT_S = 30.0
_OUTPUT_KEYS = ("content", "reasoning_content", "reasoning", "tool_calls", "function_call")


@dataclass
class Target:
    """Where to send chat completions: `base_url` ends in /v1 (OpenAI style)."""

    name: str
    base_url: str
    model: str = "bench-model"
    api_key: str = "bench-client-key-0123456789abcdef"

    def request_bytes(
        self, max_tokens: int, model: str | None = None, prompt_tokens: int | None = None
    ) -> tuple[str, int, bytes]:
        """(host, port, the whole HTTP request) of one streamed chat completion; with
        `prompt_tokens`, a prompt of that many words of 3 letters (4 bytes each, which is
        what the proxy and the simulator count as a token), different every time."""
        url = urlsplit(self.base_url.rstrip("/"))
        host, port = url.hostname or "127.0.0.1", url.port or 80
        content = "Count from one to twenty, please."
        if prompt_tokens is not None:
            start = random.randrange(1000)
            content = " ".join(f"w{(start + i) % 100:02d}" for i in range(prompt_tokens))
        body = orjson.dumps({
            "model": model or self.model, "stream": True, "max_tokens": max_tokens,
            "temperature": 0, "messages": [{"role": "user", "content": content}],
        })  # fmt: skip
        head = (
            f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {self.api_key}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return host, port, head + body


@dataclass
class Batch:
    """What one target did in one stretch of load."""

    ttft_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(what)


def carries_output(payload: bytes) -> bool:
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    for choice in choices or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):
            return True
        delta = choice.get("delta") or {}
        if any(delta.get(key) for key in _OUTPUT_KEYS):
            return True
    return False


class StreamClient(asyncio.Protocol):
    """One keep-alive connection that runs one streamed request at a time."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[float, float]] | None = None
        self._start = 0.0
        self._ttft: float | None = None
        self._pending = b""
        self._tail = b""
        self._status = 0
        self.lost = False
        self.headers: dict[str, str] = {}  # of the last response, names in lower case

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(f"connection lost: {exc or 'closed by peer'}")

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad HTTP: {exc}")
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self._ttft is None and self._status == 200:
            self._pending += body
            end = self._pending.rfind(b"\n\n")
            if end >= 0:
                events, self._pending = self._pending[:end], self._pending[end + 2 :]
                for event in events.split(b"\n\n"):
                    for line in event.split(b"\n"):
                        if line.startswith(b"data:") and carries_output(line[5:]):
                            self._ttft = time.perf_counter() - self._start
                            self._pending = b""
                            break
                    if self._ttft is not None:
                        break
        self._tail = (self._tail + body)[-64:]

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        total = time.perf_counter() - self._start
        if self._status != 200:
            waiter.set_exception(RuntimeError(f"HTTP {self._status}: {self._tail[-60:]!r}"))
        elif self._ttft is None:
            waiter.set_exception(RuntimeError("stream ended with no content chunk"))
        elif b"[DONE]" not in self._tail:
            waiter.set_exception(RuntimeError(f"stream ended without [DONE]: {self._tail!r}"))
        else:
            waiter.set_result((self._ttft, total))

    def _fail(self, why: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(RuntimeError(why))

    def send(self, request: bytes | None = None) -> asyncio.Future[tuple[float, float]]:
        """Start one request (this connection's own, or `request`); the future gives
        (ttft_s, total_s) or raises RuntimeError. `headers` then holds the response's."""
        assert self._transport is not None and not self.lost
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._ttft, self._pending, self._tail, self._status = None, b"", b"", 0
        self.headers = {}
        self._start = time.perf_counter()
        self._transport.write(request or self._request)
        return self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Pool:
    """`size` connections to one target, reused across batches (reconnects after errors)."""

    def __init__(self, target: Target, size: int, max_tokens: int) -> None:
        self.target = target
        self.host, self.port, self._request = target.request_bytes(max_tokens)
        self._clients: list[StreamClient | None] = [None] * size

    async def _client(self, i: int) -> StreamClient:
        client = self._clients[i]
        if client is None or client.lost:
            loop = asyncio.get_running_loop()
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: StreamClient(self._request), self.host, self.port),
                timeout=5.0,
            )
            client = self._clients[i] = proto
        return client

    async def run(self, duration_s: float, max_requests: int) -> Batch:
        """Keep every connection busy for `duration_s` (or until `max_requests` started)."""
        batch = Batch()
        started = [0]
        deadline = time.perf_counter() + duration_s
        begin = time.perf_counter()
        await asyncio.gather(*(self._worker(i, deadline, max_requests, started, batch)
                               for i in range(len(self._clients))))  # fmt: skip
        batch.wall_s = time.perf_counter() - begin
        return batch

    async def _worker(
        self, i: int, deadline: float, max_requests: int, started: list[int], batch: Batch
    ) -> None:
        while time.perf_counter() < deadline and started[0] < max_requests:
            started[0] += 1
            try:
                client = await self._client(i)
                ttft, total = await asyncio.wait_for(client.send(), REQUEST_TIMEOUT_S)
            except (RuntimeError, OSError, TimeoutError) as exc:
                batch.error(f"{type(exc).__name__}: {exc}")
                self._drop(i)
                await asyncio.sleep(0.01)  # do not spin on a dead target
                continue
            batch.ttft_s.append(ttft)
            batch.total_s.append(total)

    def _drop(self, i: int) -> None:
        client = self._clients[i]
        if client is not None:
            client.close()
        self._clients[i] = None

    def close(self) -> None:
        for i in range(len(self._clients)):
            self._drop(i)
