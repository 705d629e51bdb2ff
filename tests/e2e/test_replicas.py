"""Several replicas, one Redis: real `ttft-router serve` processes, a redis-server of the
test's own, the simulated market in the test's loop, traffic through the openai SDK."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml
from redis.asyncio import Redis

from proxy.simulator import Market
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, scenario
from tests.helpers import free_port, wait_until
from tests.redis_server import RedisServer, needs_redis_server

pytestmark = needs_redis_server

QUICK = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 2000}
SLOW = {"warm_ttft": {"median_s": 0.05, "sigma": 0.1}, "tokens_per_s": 2000}
# model-x is quick on alpha, model-y on beta.
MODELS = {"model-x": {"alpha": "x-a", "beta": "x-b"}, "model-y": {"alpha": "y-a", "beta": "y-b"}}
BEST = {"model-x": "alpha", "model-y": "beta"}
POLICY = "defaults: {min_samples: 5, window: {max_samples: 5000}}\n"


def market() -> Market:
    return Market(scenario({
        "alpha": {"x-a": QUICK, "y-a": SLOW},
        "beta": {"x-b": SLOW, "y-b": QUICK},
    }))  # fmt: skip


def write_config(tmp_path: Path, market: Market, redis_url: str, replica: str) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    config = {
        "server": {"replica_id": replica},
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
        "providers": market.provider_configs(),
        "models": {model: {"providers": ids} for model, ids in MODELS.items()},
        "store": {
            "kind": "redis",
            "url": redis_url,
            "max_samples": 5000,
            "connect_timeout_s": 0.2,
            "socket_timeout_s": 0.2,
        },
        "policies": ["policy.yaml"],
        "prober": {"enabled": False},  # these tests count every attempt
    }
    path = tmp_path / f"{replica}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Replica:
    """`ttft-router serve --config FILE` as a subprocess on a free port."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.with_suffix(".log")
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Replica:
        executable = Path(sys.executable).with_name("ttft-router")
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(executable), "serve", "--config", str(self.config), "--port", str(self.port),
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

        async def healthy() -> bool:
            assert self.process is not None and self.process.returncode is None, (
                self.log.read_text()
            )
            with contextlib.suppress(httpx.TransportError):
                async with httpx.AsyncClient(timeout=1) as http:
                    return (await http.get(self.url + "/healthz")).status_code == 200
            return False

        await wait_until(healthy, timeout=30, interval=0.05)
        return self

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    def unexpected_log_lines(self) -> list[str]:
        """Errors and tracebacks the replica logged (warnings about the store are expected)."""
        lines = self.log.read_text().splitlines()
        return [line for line in lines if '"level":"error"' in line or "Traceback" in line]

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=CLIENT_KEY, max_retries=0)

    async def admin(self, path: str, **params: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=5) as http:
            response = await http.get(path, params=params)
            assert response.status_code in (200, 503), response.text
            body: dict[str, Any] = response.json()
            return body

    async def attempts(self) -> dict[tuple[str, str], int]:
        pairs = (await self.admin("/admin/scores"))["pairs"]
        return {(p["model"], p["provider"]): p["n_attempts"] for p in pairs}

    async def readiness(self) -> str:
        status: str = (await self.admin("/readyz"))["status"]
        return status


@contextlib.asynccontextmanager
async def replicas(*configs: Path) -> AsyncIterator[list[Replica]]:
    started = [Replica(config) for config in configs]
    try:
        await asyncio.gather(*(r.start() for r in started))
        yield started
    finally:
        await asyncio.gather(*(replica.stop() for replica in started))


async def ask(replica: Replica, model: str) -> str:
    response = await replica.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=False
    )
    return response.headers["x-ttft-router-provider"]


async def stored_samples(redis_url: str) -> int:
    redis = Redis.from_url(redis_url, protocol=2)
    try:
        keys = [key async for key in redis.scan_iter(match="ttft:*:w:*")]
        return sum([await redis.zcard(key) for key in keys])
    finally:
        await redis.aclose()


async def test_replicas_share_scores_within_3_s_and_route_alike(tmp_path: Path) -> None:
    redis = await RedisServer(tmp_path).start_async()
    try:
        async with market() as sim:
            configs = [write_config(tmp_path, sim, redis.url, r) for r in ("r1", "r2")]
            async with replicas(*configs) as (one, two):
                sent = 0
                for model in MODELS:  # both pairs measured (the slow one a few times only)
                    served = [await ask(one, model) for _ in range(30)]
                    assert min(served.count(p) for p in ("alpha", "beta")) >= 1, served
                    assert served[-10:].count(BEST[model]) >= 8, served
                    sent += len(served)
                done = time.monotonic()
                await wait_until(lambda: _total_is(one, sent), timeout=5)
                seen = await wait_until(lambda: _total_is(two, sent), timeout=3.0)
                lag = time.monotonic() - done
                assert await one.attempts() == await two.attempts()
                for model, best in BEST.items():
                    explained = [await r.admin("/admin/explain", model=model) for r in (one, two)]
                    assert [e["would_choose"] for e in explained] == [best, best], [
                        (e["reason"], e["incumbent"], e["is_exploration"]) for e in explained
                    ]
                    assert explained[0]["order"] == explained[1]["order"]
    finally:
        redis.kill()
    assert seen and lag < 3.0


async def _total(replica: Replica) -> int:
    return sum((await replica.attempts()).values())


async def test_killing_redis_mid_traffic_fails_no_request_and_buffered_samples_arrive(
    tmp_path: Path,
) -> None:
    redis = await RedisServer(tmp_path).start_async()
    served: list[str] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def traffic(replica: Replica, model: str) -> None:
        while not stop.is_set():
            try:
                served.append(await ask(replica, model))
            except Exception as exc:  # any failure at all is what this test looks for
                failures.append(exc)

    try:
        async with (
            market() as sim,
            replicas(write_config(tmp_path, sim, redis.url, "r1")) as (one,),
        ):
            workers = [asyncio.create_task(traffic(one, m)) for m in MODELS]
            await wait_until(lambda: _stored_at_least(redis.url, 20), timeout=10)
            redis.kill()
            served_at_kill = len(served)
            await wait_until(lambda: _readiness_is(one, "degraded"), timeout=5)
            await wait_until(lambda: len(served) >= served_at_kill + 40, timeout=10)
            status = await one.admin("/admin/status")
            assert status["store"]["ok"] is False and status["store"]["buffered_samples"] > 0
            await redis.start_async()  # same port, empty (no persistence)
            await wait_until(lambda: _readiness_is(one, "ready"), timeout=10)
            stop.set()
            await asyncio.gather(*workers)
            total = len(served)

            async def flushed() -> bool:
                status = await one.admin("/admin/status")
                return status["store"]["buffered_samples"] == 0 and status["store"]["ok"]

            await wait_until(flushed, timeout=10)
            in_redis = await stored_samples(redis.url)
            # Everything served after the kill was buffered, then written; older samples may
            # have been written before the kill, and died with that Redis.
            assert total - served_at_kill <= in_redis <= total
            await wait_until(lambda: _total_is(one, in_redis), timeout=5)
            status = await one.admin("/admin/status")
            assert status["store"]["dropped_samples"] == 0
    finally:
        stop.set()
        redis.kill()
    assert failures == []
    assert one.unexpected_log_lines() == []


async def _stored_at_least(redis_url: str, count: int) -> bool:
    return await stored_samples(redis_url) >= count


async def _readiness_is(replica: Replica, status: str) -> bool:
    return await replica.readiness() == status


async def _total_is(replica: Replica, count: int) -> bool:
    return await _total(replica) == count


async def test_a_replica_started_without_redis_serves_then_becomes_ready(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)  # not started: nothing listens on its port
    try:
        async with (
            market() as sim,
            replicas(write_config(tmp_path, sim, redis.url, "r1")) as (one,),
        ):
            for _ in range(5):
                assert await ask(one, "model-x") in ("alpha", "beta")
            await wait_until(lambda: _readiness_is(one, "degraded"), timeout=5)
            assert await one.admin("/readyz") == {"status": "degraded"}  # that, and no more
            store = (await one.admin("/admin/status"))["store"]
            assert store["ok"] is False and f"127.0.0.1:{redis.port}" in store["detail"]
            await wait_until(lambda: _total_is(one, 5), timeout=5)  # learning on local data
            await redis.start_async()
            await wait_until(lambda: _readiness_is(one, "ready"), timeout=10)
            await wait_until(lambda: stored_samples(redis.url), timeout=5)
            assert await stored_samples(redis.url) == 5
    finally:
        redis.kill()
