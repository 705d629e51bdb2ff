"""Probing with several replicas on one Redis: real `ttft-router serve` processes, a
redis-server of the test's own, the simulated market in the test's loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from redis.asyncio import Redis

from proxy.core.domain import Pair
from proxy.learning.store.redis_schema import unpack_samples, window_key
from proxy.simulator import Market
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, scenario
from tests.e2e.test_replicas import Replica, replicas
from tests.helpers import wait_until
from tests.redis_server import RedisServer, needs_redis_server

pytestmark = needs_redis_server

TIME_SCALE = 0.01
INTERVAL_S = 30.0  # 0.3 s at this scale
JITTER = 0.2
FAST = {"warm_ttft": {"median_s": 0.5, "sigma": 0.1}, "tokens_per_s": 2000}
MODELS = {"model-x": {"alpha": "x-a", "beta": "x-b"}, "model-y": {"alpha": "y-a", "beta": "y-b"}}
POLICY = (
    f"defaults: {{min_samples: 1, probe: {{interval_s: {INTERVAL_S}, jitter: {JITTER}, "
    "burst_spacing_s: 5}}\n"
)


def market() -> Market:
    return Market(scenario({
        "alpha": {"x-a": FAST, "y-a": FAST},
        "beta": {"x-b": FAST, "y-b": FAST},
    }, time_scale=TIME_SCALE))  # fmt: skip


def write_config(tmp_path: Path, sim: Market, redis_url: str, replica: str) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    config = {
        "server": {"replica_id": replica},
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
        "providers": sim.provider_configs(),
        "models": {model: {"providers": ids} for model, ids in MODELS.items()},
        "store": {"kind": "redis", "url": redis_url, "connect_timeout_s": 0.2,
                  "socket_timeout_s": 0.2},
        "buffer": {"flush_interval_s": 0.02},
        "scoreboard": {"refresh_s": 0.05},
        "prober": {"time_scale": TIME_SCALE},
        "policies": ["policy.yaml"],
    }  # fmt: skip
    path = tmp_path / f"{replica}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pairs() -> list[tuple[Pair, str]]:
    """(pair, simulator model id) of every pair."""
    return [(Pair(m, p), u) for m, ids in MODELS.items() for p, u in ids.items()]


def requests(sim: Market) -> dict[Pair, int]:
    return {
        pair: sim.stats(pair.provider)["models"][upstream]["requests"] for pair, upstream in pairs()
    }


async def probe_replicas(redis_url: str) -> set[str]:
    """The replicas named by the probe samples stored in Redis."""
    redis = Redis.from_url(redis_url, protocol=2)
    try:
        names: set[str] = set()
        for pair, _ in pairs():
            members = await redis.zrange(window_key("ttft", pair), 0, -1)
            names |= {s.replica for s in unpack_samples(pair, members) if s.source == "probe"}
        return names
    finally:
        await redis.aclose()


async def test_three_serve_processes_share_the_probes_and_outlive_a_killed_one(
    tmp_path: Path,
) -> None:
    """Three real `serve` processes on one Redis: the probes are shared out between them
    through the leases, and when one is killed (maybe holding a lease) the others go on
    probing every pair. That each slot is probed exactly once across replicas is checked
    slot by slot on a synthetic clock (tests/e2e/test_prober_slots.py)."""
    redis = await RedisServer(tmp_path).start_async()
    try:
        async with market() as sim:
            configs = [write_config(tmp_path, sim, redis.url, f"r{i}") for i in (1, 2, 3)]
            async with replicas(*configs) as (one, _two, three):

                async def burst_over() -> bool:
                    rows = (await one.admin("/admin/prober"))["pairs"]
                    return all(r["reason"] == "gap" for r in rows)

                await wait_until(burst_over, timeout=15)
                assert three.process is not None
                three.process.kill()  # dies, maybe holding a lease: costs at most its slot
                sim.reset_stats()

                async def every_pair_probed_again() -> bool:
                    return all(n >= 2 for n in requests(sim).values())

                await wait_until(every_pair_probed_again, timeout=10)
                holders = await probe_replicas(redis.url)
                status = await one.admin("/admin/prober")
    finally:
        redis.kill()
    assert len(holders) >= 2, holders  # the probes were shared out, not all sent by one
    assert status["coordination"]["ok"] and "redis" in status["coordination"]["mode"]
    assert one.unexpected_log_lines() == []


async def test_with_redis_down_a_replica_probes_on_its_own_schedule_and_says_so(
    tmp_path: Path,
) -> None:
    redis = await RedisServer(tmp_path).start_async()
    try:
        async with (
            market() as sim,
            replicas(write_config(tmp_path, sim, redis.url, "r1")) as (one,),
        ):
            await wait_until(lambda: _reason_is(one, "gap"), timeout=15)
            redis.kill()

            async def local() -> dict[str, Any] | None:
                status = await one.admin("/admin/prober")
                return status if not status["coordination"]["ok"] else None

            status = await wait_until(local, timeout=5)
            assert "own schedule" in status["coordination"]["mode"]
            assert "unavailable" in status["coordination"]["detail"]
            sent = sum(requests(sim).values())
            await wait_until(lambda: sum(requests(sim).values()) >= sent + 8, timeout=5)
            row = status["pairs"][0]
            assert row["lease_holder"] is not None
            await redis.start_async()
            await wait_until(lambda: _coordinated(one), timeout=10)
    finally:
        redis.kill()
    log = one.log.read_text()
    assert "probe leases unavailable" in log and "probe leases available again" in log


async def _reason_is(replica: Replica, reason: str) -> bool:
    rows = (await replica.admin("/admin/prober"))["pairs"]
    return all(r["reason"] == reason for r in rows)


async def _coordinated(replica: Replica) -> bool:
    return bool((await replica.admin("/admin/prober"))["coordination"]["ok"])
