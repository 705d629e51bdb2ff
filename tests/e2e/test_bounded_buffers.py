"""What one request may make the proxy hold is bounded (issue 24, item 3): a stream=false
answer past 16 MiB is a 502 naming the limit, the policy caps n / max_tokens / top_logprobs
before routing, an error body is read only as far as it is kept, an HTTP/1.0 answer is
buffered only up to its cap. Providers are real aiohttp servers (tests/fakes/scripted.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from proxy.settings.config import Config
from proxy.upstream.base import MAX_ANSWER_BYTES
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, Proxy, running_proxy
from tests.e2e.test_connections import chat_request, guarded, port_of, read_until_closed
from tests.fakes.scripted import serving
from tests.helpers import wait_until

HI = [{"role": "user", "content": "hi"}]
PIECE = "x" * 65_000  # content per chunk: 16 MiB is ~260 chunks


def chunk(content: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    payload = {"id": "c", "object": "chat.completion.chunk", "model": "u", "choices": [choice]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class Huge:
    """A provider whose every answer streams `total` bytes of content (then [DONE]); counts
    the answers it could not finish because the proxy hung up."""

    def __init__(self, total: int, pause_s: float = 0.0) -> None:
        self.total = total
        self.pause_s = pause_s  # between chunks
        self.requests: list[dict[str, Any]] = []
        self.cut_off = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(self.total // len(PIECE) + 1):
                await response.write(chunk(PIECE))
                if self.pause_s:
                    await asyncio.sleep(self.pause_s)
            await response.write(chunk("", "stop") + b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            self.cut_off += 1
            raise
        return response


def config(url: str, **provider: Any) -> Config:
    return Config.model_validate({
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
        "providers": {"p": {"kind": "openai", "base_url": url + "/v1", "api_key": "k", **provider}},
        "models": {"m": {"providers": {"p": "u"}}},
        "prober": {"enabled": False},
    })  # fmt: skip


@contextlib.asynccontextmanager
async def huge_proxy(total: int, **provider: Any) -> AsyncIterator[tuple[Proxy, Huge]]:
    huge = Huge(total)
    async with serving(huge.handle) as url, running_proxy(config(url, **provider)) as proxy:
        yield proxy, huge


async def post(proxy: Proxy, body: dict[str, Any], timeout: float = 30) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout) as http:
        return await http.post(
            proxy.url + "/v1/chat/completions", json=body,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )  # fmt: skip


async def test_a_stream_false_answer_past_the_cap_is_a_502_naming_it() -> None:
    async with huge_proxy(4 * MAX_ANSWER_BYTES) as (proxy, huge):
        started = time.monotonic()
        reply = await post(proxy, {"model": "m", "messages": HI})
        assert_too_large(reply)
        assert time.monotonic() - started < 20
        await wait_until(lambda: huge.cut_off == 1, timeout=5)  # the upstream was dropped
        huge.total = 10  # and the proxy serves on: a small answer is whole
        small = await post(proxy, {"model": "m", "messages": HI})
        assert small.status_code == 200 and small.json()["choices"][0]["message"]["content"]


async def test_a_whole_body_past_the_cap_is_a_502_naming_it() -> None:
    """A provider answering stream=false with one JSON body (stream_for_non_stream: false)."""
    async with (
        serving(_big_json) as url,
        running_proxy(config(url, stream_for_non_stream=False)) as proxy,
    ):
        assert_too_large(await post(proxy, {"model": "m", "messages": HI}))


def assert_too_large(reply: httpx.Response) -> None:
    assert reply.status_code == 502, reply.text[:200]
    error = reply.json()["error"]
    assert error["code"] == "answer_too_large"
    assert f"passed {MAX_ANSWER_BYTES} bytes" in error["message"]


async def _big_json(request: web.Request) -> web.StreamResponse:
    await request.read()
    content = "y" * (MAX_ANSWER_BYTES + 1000)
    message = {"role": "assistant", "content": content}
    body = {"id": "c", "object": "chat.completion", "model": "u",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}  # fmt: skip
    return web.json_response(body)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("n", 5, "'n' is 5, above this proxy's limit of 4"),
        ("max_tokens", 40_000, "'max_tokens' is 40000, above this proxy's limit of 32768"),
        ("max_completion_tokens", 10**9, "above this proxy's limit of 32768"),
        ("top_logprobs", 6, "'top_logprobs' is 6, above this proxy's limit of 5"),
        ("max_tokens", "99", "'max_tokens' must be a whole number"),
        ("n", True, "'n' must be a whole number"),
    ],
)
async def test_policy_caps_refuse_a_request_before_routing(
    field: str, value: Any, reason: str
) -> None:
    async with huge_proxy(10) as (proxy, huge):
        reply = await post(proxy, {"model": "m", "messages": HI, field: value})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["param"] == field and reason in error["message"]
        assert huge.requests == []
        ok = await post(proxy, {"model": "m", "messages": HI, "n": 4, "max_tokens": 32768})
        assert ok.status_code == 200 and len(huge.requests) == 1


async def test_policy_caps_are_the_policy_s_to_raise(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("models: {m: {limits: {max_n: 8, max_tokens: null}}}\n")
    huge = Huge(10)
    async with serving(huge.handle) as url:
        raised = config(url).model_copy(update={"policies": [policy]})
        async with running_proxy(raised) as proxy:
            reply = await post(proxy, {"model": "m", "messages": HI, "n": 8, "max_tokens": 10**6})
            assert reply.status_code == 200, reply.text


async def test_an_error_body_is_read_only_as_far_as_it_is_kept() -> None:
    """A 400 whose body never ends: the proxy answers from its first 4 KiB at once."""

    async def endless_error(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=400, headers={"Content-Type": "application/json"})
        response.content_length = 50_000_000
        await response.prepare(request)
        await response.write(b'{"error": {"message": "bad request: ' + b"z" * 8192)
        await asyncio.sleep(60)  # the rest never comes (cancelled when the proxy hangs up)
        return response

    async with serving(endless_error) as url, running_proxy(config(url)) as proxy:
        started = time.monotonic()
        reply = await post(proxy, {"model": "m", "messages": HI}, timeout=10)
        assert reply.status_code in (400, 502), reply.text[:200]
        assert time.monotonic() - started < 5
        assert len(reply.content) < 8192


async def test_an_http_1_0_answer_past_its_buffer_cap_is_a_502_and_a_close() -> None:
    huge = Huge(4 * MAX_ANSWER_BYTES, pause_s=0.002)  # ~2 s: the proxy hangs up before
    async with serving(huge.handle) as url, guarded(config(url)) as (proxy, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy.url))
        writer.write(chat_request({"model": "m", "messages": HI, "stream": True}, version="1.0"))
        await writer.drain()
        answer = await read_until_closed(reader, 20)
        writer.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502 "), head[:100]
        assert orjson.loads(payload)["error"]["code"] == "answer_too_large"
        await wait_until(lambda: huge.cut_off == 1, timeout=10)
