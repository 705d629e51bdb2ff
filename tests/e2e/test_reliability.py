"""Connections that misbehave on the listeners `serve` runs (issue 24, item 11): a request
body that stops moving is cut per read (`body_read_timeout_s`) as well as in total
(`body_timeout_s`), and a client that half-closes after its request still gets its answer,
HTTP/1.0 included. Bounded raw-socket clients, as in test_connections.py."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.test_connections import (
    MARGIN_S,
    chat_request,
    fast_market,
    guarded,
    port_of,
    proxy_config,
    read_until_closed,
)

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_a_body_that_stops_moving_is_cut_at_the_read_timeout(framing: str) -> None:
    async with (
        fast_market() as market,
        guarded(proxy_config(market, body_timeout_s=30, body_read_timeout_s=0.5)) as (proxy, _),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        length = "Transfer-Encoding: chunked" if framing == "chunked" else "Content-Length: 500"
        piece = b"1\r\n{\r\n" if framing == "chunked" else b"{"
        writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{length}\r\n"
                     f"Authorization: Bearer {CLIENT_KEY}\r\n\r\n".encode() + piece)  # fmt: skip
        await writer.drain()
        started = time.monotonic()
        for _ in range(3):  # moving: a byte every 0.2 s keeps it open
            await asyncio.sleep(0.2)
            writer.write(piece)
            await writer.drain()
        answer = await read_until_closed(reader, 0.5 + 0.6 + MARGIN_S)  # then it stops
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"stalled: no byte for 0.5 s" in answer
        assert time.monotonic() - started < 0.6 + 0.5 + MARGIN_S


async def test_a_trickled_body_is_cut_at_the_total_body_timeout() -> None:
    async with (
        fast_market() as market,
        guarded(proxy_config(market, body_timeout_s=0.8, body_read_timeout_s=0.5)) as (proxy, _),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                     f"Authorization: Bearer {CLIENT_KEY}\r\n\r\n".encode())  # fmt: skip
        await writer.drain()
        started = time.monotonic()
        answer_task = asyncio.create_task(read_until_closed(reader, 0.8 + MARGIN_S))
        for _ in range(40):  # a byte per 0.1 s: never stalled, never done
            if answer_task.done():
                break
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)
        answer = await answer_task
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ") and b"within 0.8 s" in answer, answer[:200]
        assert time.monotonic() - started < 0.8 + MARGIN_S


@pytest.mark.parametrize(("version", "stream"), [("1.0", False), ("1.0", True), ("1.1", False)])
async def test_a_half_closed_client_gets_its_answer(version: str, stream: bool) -> None:
    slowish = {"warm_ttft": {"median_s": 0.6, "sigma": 0.0}, "tokens_per_s": 50}
    async with fast_market(**slowish) as market, guarded(proxy_config(market)) as (proxy, _):
        sock = socket.create_connection(("127.0.0.1", port_of(proxy.url)), timeout=10)
        reader, writer = await asyncio.open_connection(sock=sock)
        body = {"model": "m", "messages": HI, "max_tokens": 3, "stream": stream}
        writer.write(chat_request(body, version=version))
        await writer.drain()
        writer.write_eof()  # shutdown(SHUT_WR)
        answer = await read_until_closed(reader, 10)
        writer.close()
        head, _, payload = answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n").partition(
            b"\r\n\r\n"
        )
        assert head.startswith(b"HTTP/1.1 200 OK"), answer[:120]
        assert (b"data: [DONE]" in payload) if stream else (b'"choices"' in payload)
        assert market.stats("p")["aborted"] == 0
