"""The shared store is trusted no further than it must be (issue 24, item 9): what another
writer under the prefix adds (a pair, a decision) never becomes a score, a metric label or
an admin row; and the compose example's Redis ACL, scoped to the prefix, is all the proxy
needs, while it refuses other keys and admin commands. Each test runs its own redis-server.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.redis_store import RedisStore
from proxy.settings.config import RedisStoreConfig
from proxy.simulator import Market
from tests.e2e.conftest import Proxy, config_for, running_proxy, scenario
from tests.e2e.test_connections import FAST
from tests.helpers import wait_until
from tests.redis_server import REDIS_SERVER, RedisServer, needs_redis_server

ROOT = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "hi"}]
PASSWORD = "0123456789abcdef0123456789abcdef"

pytestmark = needs_redis_server


class AclRedis(RedisServer):
    """A redis-server run from a config file holding the compose example's settings."""

    def __init__(self, workdir: Path, settings: str) -> None:
        super().__init__(workdir)
        self.settings = settings

    @property
    def url(self) -> str:
        return f"redis://ttft-router:{PASSWORD}@127.0.0.1:{self.port}/0"

    def spawn(self) -> None:
        assert REDIS_SERVER is not None
        conf = self.workdir / "redis.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n{self.settings}")
        self.process = subprocess.Popen([REDIS_SERVER, str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip


def compose_redis_settings() -> str:
    """The redis.conf lines deploy/compose.yaml writes, with the password filled in."""
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    script = compose["services"]["redis"]["command"][0]
    body = script.split("<<CONF\n", 1)[1].split("\nCONF\n", 1)[0]
    return body.replace("$$REDIS_PASSWORD", PASSWORD) + "\n"


async def chat(proxy: Proxy, count: int) -> None:
    for _ in range(count):
        await proxy.client().chat.completions.create(model="m", messages=HI, max_tokens=2)


async def test_foreign_pairs_and_decisions_under_the_prefix_are_ignored(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path).start()
    try:
        async with Market(scenario({"p": {"m-p": FAST}})) as market:
            store = {"kind": "redis", "url": redis.url, "prefix": "hyg"}
            config = config_for(market, {"m": {"p": "m-p"}}, store=store)
            foreign = RedisStore(RedisStoreConfig(kind="redis", url=redis.url, prefix="hyg"), "x")
            await foreign.start()
            now = time.time()
            evil = [Sample("evil-model", 'evil"} 1\nfake_metric{a="b', Outcome.OK, 0.001, now),
                    Sample("m", "not-a-provider", Outcome.OK, 0.001, now)]  # fmt: skip
            await foreign.append(
                evil,
                [
                    {"id": "f00d", "model": "evil-model", "reason": "x"},
                    {"id": "beef", "model": "m", "winner": "nope"},
                ],
            )
            await foreign.close()
            async with running_proxy(config) as proxy, proxy.admin() as admin:
                await chat(proxy, 3)
                board = proxy.services.scoreboard

                async def own_scored() -> bool:
                    score = board.snapshot.get(Pair("m", "p"))
                    return score is not None and score.n == 3

                await wait_until(own_scored, timeout=10)
                assert set(board.snapshot) == {Pair("m", "p")}
                metrics = (await admin.get("/metrics")).text
                assert "evil" not in metrics and "not-a-provider" not in metrics
                assert "fake_metric" not in metrics
                rows = (await admin.get("/admin/decisions")).json()["decisions"]
                assert rows and all(r["model"] == "m" and r["id"] != "beef" for r in rows)
                scores = (await admin.get("/admin/scores")).json()["pairs"]
                assert [(s["model"], s["provider"]) for s in scores] == [("m", "p")]
    finally:
        redis.kill()


async def test_the_compose_acl_is_enough_for_the_proxy_and_no_more(tmp_path: Path) -> None:
    redis = AclRedis(tmp_path, compose_redis_settings()).start()
    try:
        async with Market(scenario({"p": {"m-p": FAST}})) as market:
            store = {"kind": "redis", "url": redis.url, "prefix": "ttft"}
            config = config_for(market, {"m": {"p": "m-p"}}, store=store)
            async with running_proxy(config) as proxy, proxy.admin() as admin:
                await chat(proxy, 3)

                async def stored() -> bool:
                    rows = (await admin.get("/admin/decisions")).json()["decisions"]
                    return len(rows) == 3

                await wait_until(stored, timeout=10)
                status = (await admin.get("/admin/status")).json()
                assert status["store"]["ok"] and status["store"]["flushed_samples"] == 3
                assert await proxy.services.store.try_lease(Pair("m", "p"), "g1", "me", 5) == "me"
        client = Redis.from_url(redis.url)
        try:
            assert await client.set("ttft:mine", b"1")
            for refused in (client.set("other:key", b"1"), client.flushall(),
                            client.config_get("*"), client.keys("*")):  # fmt: skip
                with pytest.raises(NoPermissionError):
                    await refused
        finally:
            await client.aclose()
        anonymous = Redis(host="127.0.0.1", port=redis.port)
        try:
            with pytest.raises(RedisError, match=r"(?i)auth"):  # the default user is off
                await anonymous.get("ttft:mine")
        finally:
            await anonymous.aclose()
    finally:
        redis.kill()
