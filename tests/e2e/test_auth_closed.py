"""Authentication fails closed on a real server: an empty or blank key a client sends is no
key at all (401 "missing"), whatever header carries it (issue 24, item 1)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.simulator import Market
from tests.e2e.conftest import config_for, running_proxy, scenario
from tests.e2e.test_connections import FAST, port_of, read_until_closed

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


@pytest.mark.parametrize(
    "header",
    [b"api-key:", b"api-key: ", b"Authorization: Bearer \xa0", b"Authorization: Bearer  "],
)
async def test_an_empty_key_header_is_a_missing_key(header: bytes) -> None:
    async with (
        Market(scenario({"p": {"m-p": FAST}})) as market,
        running_proxy(config_for(market, {"m": {"p": "m-p"}})) as proxy,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + header + b"\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
        )  # fmt: skip
        await writer.drain()
        answer = await read_until_closed(reader, 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]
        assert b"missing API key" in answer
        assert market.stats("p")["requests"] == 0
