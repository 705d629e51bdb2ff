"""Connection limits, the admin listener, HTTP/1.0 and half-close, on the listeners that
`ttft-router serve` runs (proxy/server.py), driven by bounded raw-socket clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from proxy.app import create_app
from proxy.server import serve, uvicorn_configs
from proxy.settings.config import Config
from proxy.simulator import Market
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, Proxy, config_for, scenario
from tests.helpers import bound_socket, wait_until

FAST: dict[str, Any] = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 2000}
HI = [{"role": "user", "content": "hi"}]
MARGIN_S = 1.5  # scheduling slack on a shared 2-core machine


@contextlib.asynccontextmanager
async def guarded(config: Config) -> AsyncIterator[tuple[Proxy, str | None]]:
    """The proxy on the listeners `serve` runs; yields it and the admin listener's URL."""
    app = create_app(config)
    main_sock = bound_socket()
    admin_sock = bound_socket() if config.server.admin_listen else None
    main_cfg, admin_cfg = uvicorn_configs(app, config.server, "127.0.0.1", 0)
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(main_cfg, admin_cfg, stop=stop,
              sockets=([main_sock], [admin_sock] if admin_sock else None))
    )  # fmt: skip
    url = f"http://127.0.0.1:{main_sock.getsockname()[1]}"
    admin_url = f"http://127.0.0.1:{admin_sock.getsockname()[1]}" if admin_sock else None
    try:
        async with httpx.AsyncClient() as http:

            async def up() -> bool:
                if task.done():
                    task.result()
                try:
                    urls = [url] + ([admin_url] if admin_url else [])
                    return all([(await http.get(u + "/healthz")).status_code == 200
                                for u in urls])  # fmt: skip
                except httpx.TransportError:
                    return False

            await wait_until(up, timeout=10)
        yield Proxy(url, app), admin_url
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        for sock in (main_sock, admin_sock):
            if sock is not None:
                sock.close()


def proxy_config(market: Market, **server: Any) -> Config:
    return config_for(market, {"m": {"p": "m-p"}}, server=server)


def fast_market(**behaviour: Any) -> Market:
    return Market(scenario({"p": {"m-p": FAST | behaviour}}))


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes (bounded in time and size)."""
    data = b""
    async with asyncio.timeout(timeout):
        while len(data) < 1_000_000:
            try:
                chunk = await reader.read(65536)
            except ConnectionError:
                break
            if not chunk:
                break
            data += chunk
    return data


def chat_request(body: dict[str, Any], *, version: str = "1.1", extra: str = "") -> bytes:
    raw = orjson.dumps(body)
    return (
        f"POST /v1/chat/completions HTTP/{version}\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n{extra}\r\n"
    ).encode() + raw


async def test_idle_connections_without_a_key_are_closed_after_the_keep_alive_timeout() -> None:
    async with (
        fast_market() as market,
        guarded(proxy_config(market, timeout_keep_alive_s=0.5, max_connections=500)) as (proxy, _),
    ):
        port = port_of(proxy.url)
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        opened = time.monotonic()
        try:
            got = await asyncio.gather(*(read_until_closed(r, 0.5 + MARGIN_S) for r, _ in conns))
        finally:
            for _, writer in conns:
                writer.close()
        assert got == [b""] * 200  # closed without a word, all of them
        assert time.monotonic() - opened < 0.5 + MARGIN_S
        # and the proxy still serves
        reply = await proxy.client().chat.completions.create(model="m", messages=HI, max_tokens=2)
        assert reply.choices[0].message.content


async def test_slowloris_headers_are_cut_at_the_header_timeout() -> None:
    async with (
        fast_market() as market,
        guarded(proxy_config(market, header_timeout_s=0.6, timeout_keep_alive_s=5)) as (proxy, _),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        started = time.monotonic()
        head = chat_request({"model": "m", "messages": HI})
        answer_task = asyncio.create_task(read_until_closed(reader, 0.6 + MARGIN_S))
        sent = 0
        with contextlib.suppress(ConnectionError):
            for byte in head[:40]:  # bounded: 40 bytes at one per 0.05 s is 2 s, > 0.6 s
                if answer_task.done():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.05)  # the attacker's pace, not a wait for a result
        answer = await answer_task
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"request_timeout" in answer
        assert time.monotonic() - started < 0.6 + MARGIN_S
        assert sent < 40


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_an_unfinished_body_is_cut_at_the_body_timeout(framing: str) -> None:
    async with (
        fast_market() as market,
        guarded(proxy_config(market, body_timeout_s=0.5)) as (proxy, _),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        length = "Transfer-Encoding: chunked" if framing == "chunked" else "Content-Length: 500"
        writer.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{length}\r\n"
            f"Authorization: Bearer {CLIENT_KEY}\r\n\r\n".encode()
            + (b'5\r\n{"mod\r\n' if framing == "chunked" else b'{"model":')
        )
        await writer.drain()
        started = time.monotonic()
        answer = await read_until_closed(reader, 0.5 + MARGIN_S)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert time.monotonic() - started < 0.5 + MARGIN_S


async def test_connections_past_the_cap_get_503_while_admitted_clients_are_served() -> None:
    slow = {"warm_ttft": {"median_s": 0.2, "sigma": 0.0}, "tokens_per_s": 20}
    async with (
        fast_market(**slow) as market,
        guarded(proxy_config(market, max_connections=30, timeout_keep_alive_s=1.0)) as (proxy, _),
    ):
        client = proxy.client()

        async def healthy() -> str:
            stream = await client.chat.completions.create(
                model="m", messages=HI, stream=True, max_tokens=10
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        in_flight = asyncio.create_task(healthy())
        await wait_until(lambda: market.stats("p")["in_flight"] == 1, timeout=5)
        port = port_of(proxy.url)
        flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        try:
            answers = await asyncio.gather(*(read_until_closed(r, 1.0 + MARGIN_S)
                                             for r, _ in flood))  # fmt: skip
        finally:
            for _, writer in flood:
                writer.close()
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        # 30 slots: the healthy client's connection and 29 of the flood; each refused one is
        # told so, each admitted one is closed at the idle timeout
        assert len(refused) == 11, [a[:40] for a in answers]
        assert all(b"too_many_connections" in a and b"retry-after: 1" in a for a in refused)
        assert answers.count(b"") == 29
        assert len((await in_flight).split()) == 10
        reply = await client.chat.completions.create(model="m", messages=HI, max_tokens=2)
        assert reply.choices[0].message.content


async def test_admin_listen_serves_admin_and_metrics_apart_from_the_main_listener() -> None:
    async with (
        fast_market() as market,
        guarded(
            proxy_config(market, admin_listen="127.0.0.1:1")  # the test binds its own socket
        ) as (proxy, admin_url),
    ):
        assert admin_url is not None
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        reply = await proxy.client().chat.completions.create(model="m", messages=HI, max_tokens=2)
        assert reply.choices[0].message.content
        async with httpx.AsyncClient(timeout=10, headers=auth) as http:
            for path in ("/admin/status", "/admin/decisions", "/metrics"):
                on_main = await http.get(proxy.url + path)
                assert on_main.status_code == 404, path
                assert on_main.json()["error"]["code"] is not None
                assert (await http.get(admin_url + path)).status_code == 200, path
            metrics = (await http.get(admin_url + "/metrics")).text
            assert "ttft_router_" in metrics
            wrong = {"Authorization": "Bearer wrong"}
            assert (await http.get(admin_url + "/admin/status", headers=wrong)).status_code == 401
            for path in ("/v1/models", "/healthz", "/readyz"):
                assert (await http.get(proxy.url + path, headers={
                    "Authorization": f"Bearer {CLIENT_KEY}"})).status_code == 200, path  # fmt: skip
            assert (await http.get(admin_url + "/v1/models")).status_code == 404
            assert (await http.get(admin_url + "/readyz")).status_code == 200


@pytest.mark.parametrize("stream", [True, False])
async def test_http_1_0_clients_get_a_content_length_answer(stream: bool) -> None:
    async with fast_market() as market, guarded(proxy_config(market)) as (proxy, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        body = {"model": "m", "messages": HI, "max_tokens": 4, "stream": stream}
        writer.write(chat_request(body, version="1.0"))
        await writer.drain()
        answer = await read_until_closed(reader, 10)
        writer.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        assert lines[0].startswith(b"http/1.1 200"), head
        assert b"transfer-encoding: chunked" not in lines
        length = [int(h.split(b":")[1]) for h in lines if h.startswith(b"content-length:")]
        assert length == [len(payload)] and payload
        if stream:
            assert payload.endswith(b"data: [DONE]\n\n")
        else:
            assert orjson.loads(payload)["choices"][0]["message"]["content"]


async def test_a_half_closed_client_still_gets_its_whole_stream() -> None:
    slowish = {"warm_ttft": {"median_s": 0.3, "sigma": 0.0}, "tokens_per_s": 50}
    async with fast_market(**slowish) as market, guarded(proxy_config(market)) as (proxy, _):
        sock = socket.create_connection(("127.0.0.1", port_of(proxy.url)), timeout=10)
        reader, writer = await asyncio.open_connection(sock=sock)
        body = {"model": "m", "messages": HI, "max_tokens": 5, "stream": True}
        writer.write(chat_request(body))
        await writer.drain()
        writer.write_eof()  # shutdown(SHUT_WR): "I have said all I will say"
        answer = await read_until_closed(reader, 10)
        writer.close()
        # an interim 100 Continue (the probe for a client gone for good), then the answer
        assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), answer[:80]
        assert answer.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # the last chunk
        assert market.stats("p")["aborted"] == 0


async def test_a_client_that_closes_before_its_answer_cancels_the_upstream_request() -> None:
    slow = {"warm_ttft": {"median_s": 30.0, "sigma": 0.0}}
    async with fast_market(**slow) as market, guarded(proxy_config(market)) as (proxy, _):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        writer.write(chat_request({"model": "m", "messages": HI, "stream": True}))
        await writer.drain()
        await wait_until(lambda: market.stats("p")["in_flight"] == 1, timeout=5)
        writer.close()  # a full close looks like a half-close to the server: a FIN
        await writer.wait_closed()
        gone = time.monotonic()
        await wait_until(lambda: market.stats("p")["aborted"] == 1, timeout=2.0)
        assert time.monotonic() - gone < 1.0


async def test_oversized_headers_get_431_and_a_close() -> None:
    async with fast_market() as market, guarded(proxy_config(market)) as (proxy, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        answer_task = asyncio.create_task(read_until_closed(reader, 10))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(20):  # 20 x 8 KiB: past the 64 KiB limit, bounded
                if answer_task.done():
                    break
                writer.write(b"X-Pad: " + b"a" * 8192 + b"\r\n")
                await writer.drain()
        answer = await answer_task
        writer.close()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        # a request with a large body is not mistaken for large headers
        long = [{"role": "user", "content": "x" * 300_000}]
        raw = orjson.dumps({"model": "m", "messages": long})
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        writer.write(chat_request({}).split(b"Content-Length")[0]
                     + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)  # fmt: skip
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200 "), head
