"""A lean OpenAI-compatible streaming upstream for overhead benchmarks.

Raw asyncio protocol on uvloop with httptools' request parser: per request it parses the
JSON body once (for `model` and `stream`), then writes pre-rendered chunked SSE frames from
timers: a role-only first chunk at once, the first content chunk after the first-token
delay, the other tokens `--inter-token-ms` apart, a finish chunk and `data: [DONE]`. No
per-request task, no framework: cheap enough that the proxy under test is the bottleneck.

    python benchmarks/upstream.py --port 0 --first-token-ms 20 --tokens 20 --inter-token-ms 2

Prints `listening on 127.0.0.1:<port>` once it accepts connections. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable

import httptools
import orjson
import uvloop

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
END = b"0\r\n\r\n"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(obj: object) -> bytes:
    return chunked(b"data: " + orjson.dumps(obj) + b"\n\n")


class Script:
    """The timing of every streamed answer, and its frames rendered once per model name."""

    def __init__(self, first_token_s: float, tokens: int, inter_token_s: float) -> None:
        self.first_token_s = first_token_s
        self.tokens = tokens
        self.inter_token_s = inter_token_s
        self._frames: dict[str, tuple[bytes, list[bytes], bytes, bytes]] = {}

    def frames(self, model: str) -> tuple[bytes, list[bytes], bytes, bytes]:
        """(role-only chunk, one chunk per token, finish chunk + [DONE], whole JSON body)."""
        cached = self._frames.get(model)
        if cached is None:
            cached = self._frames[model] = self._render(model)
        return cached

    def _render(self, model: str) -> tuple[bytes, list[bytes], bytes, bytes]:
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
                "model": model}  # fmt: skip

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return sse({**base, "choices": [choice]})

        role = chunk({"role": "assistant", "content": ""})
        words = [chunk({"content": f"tok{i} "}) for i in range(self.tokens)]
        usage = {"prompt_tokens": 10, "completion_tokens": self.tokens,
                 "total_tokens": 10 + self.tokens}  # fmt: skip
        finish = chunk({}, "stop") + chunked(b"data: [DONE]\n\n") + END
        whole = orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "".join(f"tok{i} " for i in range(self.tokens))}}],
            "usage": usage,
        })  # fmt: skip
        return role, words, finish, whole


class Connection(asyncio.Protocol):
    """One client connection: keep-alive, one request at a time (no pipelining needed)."""

    def __init__(self, script: Script, counter: list[int]) -> None:
        self._script = script
        self._counter = counter
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._reply(400, b'{"error":{"message":"bad request","type":"invalid_request_error"}}')
            if self._transport is not None:
                self._transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url, body = self._url, b"".join(self._body)
        self._url, self._body = b"", []
        self._counter[0] += 1
        if url.endswith(b"/chat/completions"):
            self._chat(body)
        elif url.endswith(b"/models"):
            self._reply(200, b'{"object":"list","data":[]}')
        else:
            self._reply(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')

    def _reply(self, status: int, body: bytes) -> None:
        if self._transport is None:
            return
        head = b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        self._transport.write(head % (status, len(body)) + body)

    def _chat(self, raw: bytes) -> None:
        try:
            body = orjson.loads(raw)
            model = str(body["model"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._reply(400, b'{"error":{"message":"bad body","type":"invalid_request_error"}}')
            return
        role, words, finish, whole = self._script.frames(model)
        if not body.get("stream"):
            self._reply(200, whole)
            return
        assert self._transport is not None
        self._transport.write(STREAM_HEAD + role)
        self._schedule(self._script.first_token_s, _Stream(self, words, finish).next)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        if delay > 0:
            self._timer = self._loop.call_later(delay, callback)
        else:
            self._timer = self._loop.call_soon(callback)

    def write(self, data: bytes) -> bool:
        if self._transport is None or self._transport.is_closing():
            return False
        self._transport.write(data)
        return True


class _Stream:
    """Writes one answer's token frames from timers (a tiny state machine, no task)."""

    __slots__ = ("_conn", "_finish", "_i", "_words")

    def __init__(self, conn: Connection, words: list[bytes], finish: bytes) -> None:
        self._conn, self._words, self._finish, self._i = conn, words, finish, 0

    def next(self) -> None:
        if self._i >= len(self._words):
            self._conn.write(self._finish)
            return
        if not self._conn.write(self._words[self._i]):
            return  # the client went away
        self._i += 1
        self._conn._schedule(self._conn._script.inter_token_s, self.next)


async def serve(port: int, script: Script) -> None:
    loop = asyncio.get_running_loop()
    counter = [0]
    server = await loop.create_server(
        lambda: Connection(script, counter), "127.0.0.1", port, backlog=4096
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--inter-token-ms", type=float, default=2.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    script = Script(args.first_token_ms / 1000, max(args.tokens, 1), args.inter_token_ms / 1000)
    uvloop.run(serve(args.port, script))


if __name__ == "__main__":
    main()
