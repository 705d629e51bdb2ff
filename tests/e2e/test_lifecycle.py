"""`ttft-router serve` as a real process: SIGTERM drains a stream, flushes its sample to
Redis and exits 0; a litellm provider's import happens at start-up, not in a request."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.core.domain import Pair
from proxy.learning.store.redis_store import RedisStore
from proxy.settings.config import RedisStoreConfig
from proxy.simulator import Market
from tests.e2e.conftest import CLIENT_KEY, scenario
from tests.helpers import free_port, wait_until
from tests.redis_server import REDIS_SERVER, RedisServer

HI = [{"role": "user", "content": "hi"}]


def spawn_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def serve_process(
    tmp_path: Path, providers: dict[str, Any], models: dict[str, Any], **extra: Any
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`ttft-router serve` in a subprocess until it is ready; killed at the end if alive."""
    port = free_port()
    config = {
        "server": {"port": port, "log_level": "info", "shutdown_drain_s": 20},
        "auth": {"api_keys": [CLIENT_KEY]},
        "providers": providers,
        "models": {m: {"providers": p} for m, p in models.items()},
        "scoreboard": {"refresh_s": 0.05},
        "prober": {"enabled": False},  # the tests count samples exactly
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "serve.log"
    proc = spawn_serve(path, log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:

            async def ready() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return (await http.get(url + "/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=30, interval=0.05)
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not on PATH")
async def test_sigterm_drains_the_stream_flushes_its_sample_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    redis = await RedisServer(tmp_path / "redis").start_async()
    slow = {"warm_ttft": {"median_s": 0.05, "sigma": 0.0}, "tokens_per_s": 20}
    store = {"kind": "redis", "url": redis.url, "prefix": "sigterm"}
    try:
        async with Market(scenario({"p": {"m-p": slow}})) as market, serve_process(
            tmp_path, market.provider_configs(), {"m": {"p": "m-p"}}, store=store,
            buffer={"flush_interval_s": 3600},  # only the shutdown flush can write it
        ) as (proc, url, log):  # fmt: skip
            body = {"model": "m", "messages": HI, "stream": True, "max_tokens": 30}
            headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
            lines: list[str] = []
            async with (
                httpx.AsyncClient(timeout=30) as http,
                http.stream(
                    "POST", url + "/v1/chat/completions", json=body, headers=headers
                ) as response,
            ):
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and not lines:
                        proc.send_signal(signal.SIGTERM)  # mid-stream: ~1.5 s still to go
                    lines.append(line)
            assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]", lines[-3:]
            assert sum(1 for line in lines if line.startswith("data: {")) >= 30
            code = await asyncio.to_thread(proc.wait, 30)
            assert code == 0, log.read_text()
            assert "SIGTERM: draining streams" in log.read_text()
        reader = RedisStore(RedisStoreConfig(kind="redis", url=redis.url, prefix="sigterm"), "t")
        await reader.start()
        try:
            windows = await reader.changed_windows({})
        finally:
            await reader.close()
        assert [len(w.samples) for p, w in windows.items() if p == Pair("m", "p")] == [1]
    finally:
        redis.kill()


async def test_litellm_is_imported_at_start_up_not_by_the_first_request(tmp_path: Path) -> None:
    fast = {"warm_ttft": {"median_s": 0.005, "sigma": 0.0}, "tokens_per_s": 2000}
    async with Market(scenario({"sim": {"org/lite-1": fast}})) as market:
        lite = {"kind": "litellm", "litellm_provider": "openai",
                "api_base": market.base_url("sim"), "api_key": market.api_key("sim")}  # fmt: skip
        async with serve_process(tmp_path, {"lite": lite}, {"m": {"lite": "org/lite-1"}}) as (
            _proc,
            url,
            log,
        ):
            assert "litellm imported in" in log.read_text()  # before it was ready
            body = {"model": "m", "messages": HI, "stream": True, "max_tokens": 3}
            headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
            async with httpx.AsyncClient(timeout=30) as http:
                started = time.monotonic()
                async with http.stream("POST", url + "/v1/chat/completions", json=body,
                                       headers=headers) as response:  # fmt: skip
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("data: {"):
                            first = time.monotonic() - started
                            break
            # the import alone takes seconds (measured by the same process, under the same
            # machine load); the first request's first token must not pay anything like it
            imported = re.search(r"litellm imported in ([0-9.]+) s", log.read_text())
            assert imported is not None
            assert first < max(1.5, 0.5 * float(imported.group(1))), (first, imported.group(0))
