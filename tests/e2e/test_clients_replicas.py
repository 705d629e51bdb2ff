"""One client's limit, three replicas, one Redis: real `ttft-router serve` processes, a
redis-server of the test's own, the simulated market in the test's loop, traffic through the
openai SDK. The minute cannot roll over within the test, so the count is exact: as many
requests are served as the limit allows, whichever replica took them. With Redis gone, each
replica serves its share of the limit on its own and no request waits for Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import yaml

from proxy.simulator import Market
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, scenario
from tests.e2e.test_replicas import Replica, replicas
from tests.redis_server import RedisServer, needs_redis_server

pytestmark = needs_redis_server

FAST = {"warm_ttft": {"median_s": 0.002, "sigma": 0.1}, "tokens_per_s": 20000}
KEY = "fleet-app-3b9d0f6c2e8a41d7b5c9"
LIMIT = 30  # requests per minute, for the three replicas together
SHARE = 0.34  # each replica's share while Redis is away: floor(30 x 0.34) = 10


def write_config(tmp_path: Path, market: Market, redis_url: str, replica: str) -> Path:
    config = {
        "server": {"replica_id": replica},
        "auth": {
            "api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY], "fallback_share": SHARE,
            "clients": {"fleet-app": {"key": KEY,
                                      "limits": {"requests_per_minute": LIMIT}}},
        },
        "providers": market.provider_configs(),
        "models": {"m": {"providers": {"p": "m-p"}}},
        "store": {"kind": "redis", "url": redis_url, "connect_timeout_s": 0.2,
                  "socket_timeout_s": 0.2},
        "prober": {"enabled": False},
    }  # fmt: skip
    path = tmp_path / f"{replica}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def ask(client: openai.AsyncOpenAI) -> bool:
    """One request of fleet-app: True when served, False when refused with a 429."""
    try:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    except openai.RateLimitError as exc:
        assert exc.code == "rate_limit_exceeded" and "retry-after" in exc.response.headers
        return False
    return True


async def burst(targets: list[Replica], count: int, concurrency: int = 12) -> list[bool]:
    """`count` requests of fleet-app, spread over `targets` in turn."""
    clients = [openai.AsyncOpenAI(base_url=r.url + "/v1", api_key=KEY, max_retries=0)
               for r in targets]  # fmt: skip
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with slots:
            return await ask(clients[i % len(clients)])

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        for client in clients:
            await client.close()


async def use_of(replica: Replica) -> dict[str, Any]:
    rows = (await replica.admin("/admin/clients"))["clients"]
    row: dict[str, Any] = next(r for r in rows if r["name"] == "fleet-app")
    return row


async def test_three_replicas_share_one_limit_and_fall_back_to_their_share(
    tmp_path: Path,
) -> None:
    redis = await RedisServer(tmp_path).start_async()
    try:
        async with Market(scenario({"p": {"m-p": FAST}})) as market:
            configs = [write_config(tmp_path, market, redis.url, r) for r in ("r1", "r2", "r3")]
            async with replicas(*configs) as fleet:
                served = await burst(fleet, 3 * LIMIT)  # 90 requests, 30 to each replica
                assert served.count(True) == LIMIT, served
                assert market.stats("p")["requests"] == LIMIT
                for replica in fleet:  # every replica reads the one count
                    use = await use_of(replica)
                    assert use["usage"]["requests_last_minute"] == LIMIT
                    assert use["usage"]["refused_today"] == 2 * LIMIT
                mine = [(await use_of(r))["this_replica"]["requests"] for r in fleet]
                assert sum(mine) == LIMIT

                redis.kill()  # each replica alone: its share of the limit, counted anew
                alone = await burst(fleet[:1], 15, concurrency=4)
                assert alone.count(True) == int(LIMIT * SHARE), alone
                view = await fleet[0].admin("/admin/clients")
                assert view["counted_locally"] is True and view["store_error"]
                assert [line for r in fleet for line in r.unexpected_log_lines()] == []
    finally:
        redis.kill()
