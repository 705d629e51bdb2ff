"""The listeners of `ttft-router serve`: uvicorn + httptools, with connection limits.

uvicorn bounds a keep-alive connection only once it has answered a request on it, and has
no header or body read timeout, so a client that connects and sends nothing, dribbles its
headers (slowloris) or never finishes its body holds a connection forever.
`GuardedHttpToolsProtocol` adds, per connection (`ConnectionLimits`, from `server:`):

- idle: `timeout_keep_alive_s` from connect (and after each response) to the next byte;
- headers: `header_timeout_s` from a request's first byte to the end of its headers;
- body: `body_timeout_s` from the end of the headers to the end of the body, and
  `body_read_timeout_s` between two reads of it (a body that stops moving is cut early);
- a cap, `max_connections`: a connection past it is answered 503 at once and closed,
  before any of its bytes are parsed;
- request line and headers of at most MAX_HEADER_BYTES (64 KiB), else 431.

A timed-out request gets a 408 and the connection is closed. None of this runs the app or
checks a key, so an unauthenticated connection costs one socket, bounded by these limits.

A client that half-closes (shuts its write side) after a complete request is not treated as
gone: the answer is still written, then the connection closed. A FIN cannot tell a half-close
from a full close, so while no answer has started, an HTTP/1.1 client is sent one interim
`100 Continue` (RFC 9110 allows unsolicited 1xx to HTTP/1.1 clients): a socket closed for
good answers it with a reset, seen within a fraction of a second, and the request is
cancelled as for any client that leaves. HTTP/1.0 knows no 1xx: a half-closed HTTP/1.0
client is answered, and one gone for good is noticed when its answer is written.

`Listener` is the ASGI app each listener serves: the proxy's app minus the paths served on
the other listener (`server.admin_listen`), with HTTP/1.0 answers given a Content-Length
(uvicorn would send them chunked, which HTTP/1.0 does not know). `serve` runs the main
listener and, when configured, the admin listener in one process around one app; SIGTERM
or SIGINT drains streams for up to `server.shutdown_drain_s`, flushes samples (the app's
lifespan) and returns, so the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.api.health import LISTENER
from proxy.core.errors import AnswerTooLarge, NotFound
from proxy.settings.config import ServerConfig, parse_listen

log = logging.getLogger("ttft_router.server")

ADMIN_PATHS = ("/admin", "/dashboard", "/metrics")
HEALTH_PATHS = ("/healthz", "/readyz")
REJECT_LINGER_S = 1.0  # a refused connection is closed this long after its 503
# Half-closed client, no answer started yet: look for the reset this often (doubling).
PROBE_FIRST_S = 0.05
PROBE_MAX_S = 1.0
CONTINUE_PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"
HTTP10_MAX_BUFFER = 16 * 1024 * 1024  # an HTTP/1.0 answer is buffered up to this size
MAX_HEADER_BYTES = 64 * 1024  # request line + headers; past it: 431 and closed


@dataclass(frozen=True)
class ConnectionLimits:
    idle_s: float = 5.0
    header_s: float = 10.0
    body_s: float = 30.0
    body_read_s: float = 10.0
    max_connections: int = 1000

    @classmethod
    def of(cls, server: ServerConfig) -> ConnectionLimits:
        return cls(
            idle_s=server.timeout_keep_alive_s,
            header_s=server.header_timeout_s,
            body_s=server.body_timeout_s,
            body_read_s=server.body_read_timeout_s,
            max_connections=server.max_connections,
        )


def _raw_response(status: int, reason: str, message: str, code: str, *extra: bytes) -> bytes:
    body = orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None,
                   "code": code}}
    )  # fmt: skip
    head = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


BUSY = _raw_response(
    503, "Service Unavailable", "too many connections to ttft-router; retry shortly",
    "too_many_connections", b"retry-after: 1",
)  # fmt: skip


class ProxyUvicornConfig(uvicorn.Config):
    """uvicorn's Config with the guarded protocol and its limits (pickled to workers)."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kw: Any) -> None:
        super().__init__(app, http=GuardedHttpToolsProtocol, **kw)
        self.timeout_keep_alive = limits.idle_s  # type: ignore[assignment]  # a float works
        self.limits = limits


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read timeouts, a connection cap and half-close."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ConnectionLimits = getattr(config, "limits", None) or ConnectionLimits()
        self._read_timer: asyncio.TimerHandle | None = None
        self._gap_timer: asyncio.TimerHandle | None = None  # between two body reads
        self._probe_timer: asyncio.Handle | None = None
        self._probe_wait = PROBE_FIRST_S
        self._rejected = False  # past max_connections: never counted, never parsed
        self._discarding = False  # answered (503, 408, 431) and closing: input is dropped
        self._in_headers = True  # between a request's end (or the connect) and its headers
        self._header_bytes = 0

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._reject(transport)
            return
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer after a response only; bound the first wait too.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _reject(self, transport: asyncio.Transport) -> None:
        self._rejected = True
        self.transport = transport
        rejected = getattr(self.server_state, "ttft_rejected", 0) + 1
        setattr(self.server_state, "ttft_rejected", rejected)  # noqa: B010 (uvicorn's object)
        if rejected == 1 or rejected % 1000 == 0:
            log.warning("server.max_connections (%d) reached: refused %d connection(s) "
                        "with 503 so far", self.limits.max_connections, rejected)  # fmt: skip
        self._finish(BUSY)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > MAX_HEADER_BYTES:
            self._cancel_read_timer()
            log.info("request headers over %d bytes; closing the connection", MAX_HEADER_BYTES)
            message = f"request line and headers exceed {MAX_HEADER_BYTES} bytes"
            self._finish(_raw_response(431, "Request Header Fields Too Large", message,
                                       "headers_too_large"))  # fmt: skip

    def eof_received(self) -> bool | None:  # type: ignore[override]
        cycle = self.cycle
        if self._discarding or cycle is None or cycle.response_complete or cycle.more_body:
            return None  # nothing in flight that could still complete: close
        # The request is complete and its answer under way: keep the write side open.
        cycle.keep_alive = False
        if not cycle.response_started and cycle.scope["http_version"] != "1.0":
            cycle.waiting_for_100_continue = False
            self._probe_timer = self.loop.call_soon(self._probe)
        return True

    def _probe(self) -> None:
        """Half-closed before any answer: is the client still there to read one?"""
        self._probe_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle.response_started or cycle.response_complete:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            log.info("client closed its connection before the answer: cancelling")
            self.transport.abort()
            return
        if self._probe_wait == PROBE_FIRST_S:
            self.transport.write(CONTINUE_PROBE)
        self._probe_timer = self.loop.call_later(self._probe_wait, self._probe)
        self._probe_wait = min(self._probe_wait * 2, PROBE_MAX_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        if not self._rejected:
            super().connection_lost(exc)

    # -- per-request timers ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.limits.header_s, self._headers_timed_out)

    def on_headers_complete(self) -> None:
        self._cancel_read_timer()
        self._in_headers = False
        super().on_headers_complete()
        self._arm(self.limits.body_s, self._body_timed_out)
        self._arm_gap()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm_gap()

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        self._in_headers, self._header_bytes = True, 0
        super().on_message_complete()

    def _arm_gap(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        self._gap_timer = self.loop.call_later(self.limits.body_read_s, self._body_stalled)

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(seconds, callback)

    def _cancel_read_timer(self) -> None:
        for timer in (self._read_timer, self._gap_timer):
            if timer is not None:
                timer.cancel()
        self._read_timer = self._gap_timer = None

    def _headers_timed_out(self) -> None:
        self._read_timer = None
        self._time_out(f"request headers not received within {self.limits.header_s:g} s")

    def _body_timed_out(self) -> None:
        self._cancel_read_timer()
        self._time_out(f"request body not received within {self.limits.body_s:g} s")

    def _body_stalled(self) -> None:
        self._cancel_read_timer()
        self._time_out(f"request body stalled: no byte for {self.limits.body_read_s:g} s")

    def _time_out(self, message: str) -> None:
        if self.transport.is_closing() or self._discarding:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
        log.info("%s: %s; closing the connection", client, message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() says so; its sends go nowhere
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        self._finish(_raw_response(408, "Request Timeout", message, "request_timeout"))

    def _finish(self, answer: bytes) -> None:
        """Answer, then close: our FIN follows the answer, what the client still sends is
        read and dropped, and the socket closes REJECT_LINGER_S later (closing at once,
        with the client's bytes unread, would reset the connection before it reads)."""
        self._discarding = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REJECT_LINGER_S, self.transport.close)


# -- the ASGI app of each listener -------------------------------------------------------


def _matches(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


class Listener:
    """The app as one listener serves it: `refuse` paths answer 404; HTTP/1.0 is buffered."""

    def __init__(
        self, app: ASGIApp, *, refuse: tuple[str, ...] = (), only: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.refuse = refuse
        self.only = only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.only:
                scope[LISTENER] = "admin"  # /metrics needs no key there (api.health)
            path: str = scope["path"]
            if _matches(path, self.refuse) or (self.only and not _matches(path, self.only)):
                await _not_found(send, scope["method"], path)
                return
            if scope.get("http_version") == "1.0":
                send = ContentLengthSend(send)
        await self.app(scope, receive, send)


async def _not_found(send: Send, method: str, path: str) -> None:
    error = NotFound(f"no route {method} {path} on this listener")
    body = orjson.dumps(error.body())
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ContentLengthSend:
    """An ASGI send that holds an answer without Content-Length until its last byte, then
    sends it with one: HTTP/1.0 has no chunked encoding (uvicorn's default for streams).

    It holds at most HTTP10_MAX_BUFFER bytes: past them the client gets a 502 naming the
    limit instead, the connection closes (HTTP/1.0 keeps none open), which the app sees as
    the client leaving, and what the app still sends is dropped."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._passthrough = False
        self._refused = False

    async def __call__(self, message: Message) -> None:
        if self._passthrough:
            await self._send(message)
        elif self._refused:
            return
        elif message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", ())}
            if b"content-length" in names:
                self._passthrough = True
                await self._send(message)
            else:
                self._start = message
        elif message["type"] == "http.response.body" and self._start is not None:
            chunk: bytes = message.get("body", b"")
            self._size += len(chunk)
            if self._size > HTTP10_MAX_BUFFER:
                await self._refuse()
                return
            self._body.append(chunk)
            if not message.get("more_body", False):
                body = b"".join(self._body)
                headers = [*self._start.get("headers", ()),
                           (b"content-length", str(len(body)).encode())]  # fmt: skip
                await self._send({**self._start, "headers": headers})
                await self._send({"type": "http.response.body", "body": body})
        else:
            await self._send(message)

    async def _refuse(self) -> None:
        self._refused, self._body = True, []
        log.warning("an HTTP/1.0 answer passed %d bytes: answered 502 instead", HTTP10_MAX_BUFFER)
        error = AnswerTooLarge(
            f"the answer passed {HTTP10_MAX_BUFFER} bytes, the most held for an HTTP/1.0 "
            "client (which cannot be streamed to): use HTTP/1.1, or ask for less"
        )
        body = orjson.dumps(error.body())
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        await self._send({"type": "http.response.start", "status": error.status,
                          "headers": headers})  # fmt: skip
        await self._send({"type": "http.response.body", "body": body})


# -- running the listeners ---------------------------------------------------------------


class Server(uvicorn.Server):
    """uvicorn's Server without its signal handling (`serve` handles signals: a graceful
    stop exits 0, where uvicorn re-raises the signal and the process exits 143)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _options(server: ServerConfig, **extra: Any) -> dict[str, Any]:
    limits = ConnectionLimits.of(server)
    return dict(
        loop="uvloop", ws="none", server_header=False, log_level="warning", access_log=False,
        timeout_graceful_shutdown=server.shutdown_drain_s, limits=limits, **extra,
    )  # fmt: skip


def uvicorn_configs(
    app: ASGIApp, server: ServerConfig, host: str, port: int
) -> tuple[ProxyUvicornConfig, ProxyUvicornConfig | None]:
    """The main listener's uvicorn config, and the admin listener's when configured."""
    common = _options(server)
    if server.admin_listen is None:
        return ProxyUvicornConfig(Listener(app), host=host, port=port, **common), None
    admin_host, admin_port = parse_listen(server.admin_listen)
    main = ProxyUvicornConfig(Listener(app, refuse=ADMIN_PATHS), host=host, port=port, **common)
    admin = ProxyUvicornConfig(
        Listener(app, only=ADMIN_PATHS + HEALTH_PATHS), host=admin_host, port=admin_port,
        lifespan="off", **common,
    )  # fmt: skip
    return main, admin


def run_workers(
    factory: Callable[[], ASGIApp], server: ServerConfig, host: str, port: int, workers: int
) -> None:
    """`serve --workers N`: uvicorn's supervisor runs N processes, each building its app with
    `factory` (picklable: it crosses into each worker) wrapped in `Listener`, and serving it
    through uvicorn's own Server with the guarded protocol and its limits."""
    from uvicorn.supervisors import Multiprocess

    main = ProxyUvicornConfig(
        factory, host=host, port=port, **_options(server, factory=True, workers=workers)
    )
    Multiprocess(main, sockets=[main.bind_socket()]).run()


async def serve(
    main_config: uvicorn.Config,
    admin_config: uvicorn.Config | None = None,
    *,
    sockets: tuple[list[socket.socket] | None, list[socket.socket] | None] = (None, None),
    stop: asyncio.Event | None = None,
) -> None:
    """Run the main listener (which owns the app's lifespan) and the admin listener, which
    starts once the app is up and stops once the main listener has drained. They stop on
    SIGTERM/SIGINT (a second one: at once), or when `stop` is set if one is given."""
    main = Server(main_config)
    admin = Server(admin_config) if admin_config is not None else None
    loop = asyncio.get_running_loop()

    def on_stop(reason: str) -> None:
        if main.should_exit:
            main.force_exit = True
            log.warning("%s again: stopping without waiting for streams", reason)
            return
        main.should_exit = True
        log.info("%s: draining streams for up to %g s, then flushing samples", reason,
                 main_config.timeout_graceful_shutdown)  # fmt: skip

    signals = (signal.SIGINT, signal.SIGTERM) if stop is None else ()
    for signum in signals:
        loop.add_signal_handler(signum, on_stop, signal.Signals(signum).name)
    waiter = asyncio.create_task(stop.wait()) if stop is not None else None
    if waiter is not None:
        waiter.add_done_callback(lambda t: None if t.cancelled() else on_stop("stop requested"))
    admin_task: asyncio.Task[None] | None = None
    try:
        main_task = asyncio.create_task(main.serve(sockets[0]))
        if admin is not None:
            await _started(main, main_task)
            if main.started:
                admin_task = asyncio.create_task(admin.serve(sockets[1]))
        await main_task
    finally:
        if waiter is not None:
            waiter.cancel()
        if admin is not None and admin_task is not None:
            admin.should_exit = True
            await admin_task
        for signum in signals:
            loop.remove_signal_handler(signum)


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Until `server` listens or its task ends (a failed start-up ends it)."""
    while not server.started and not task.done():
        await asyncio.wait({task}, timeout=0.05)


def run(main_config: uvicorn.Config, admin_config: uvicorn.Config | None) -> None:
    """`serve` in a fresh uvloop event loop (the CLI's entry point)."""
    with asyncio.Runner(loop_factory=main_config.get_loop_factory()) as runner:
        runner.run(serve(main_config, admin_config))
