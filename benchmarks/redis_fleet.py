"""Fleet figures on three Redis deployments: 3 `ttft-router serve` replicas sharing 2,000 pairs.

    .venv/bin/python benchmarks/redis_fleet.py                      # single, sentinel, cluster
    .venv/bin/python benchmarks/redis_fleet.py --deployments cluster --rate 200

For each deployment (one redis-server; a primary + replica under three Sentinels; a Cluster of
three primaries with a replica each: all started here on loopback, stopped by PID):

1. Prefill: 500 models x 4 providers = 2,000 pairs, `--window` samples each (another
   replica's history, written through RedisStore). Redis memory per pair: `used_memory` of
   the primaries after, less before, over the pairs (replicas hold as much again).
2. Three replicas start (`ttft-router serve`, prober off); the simulator
   (`python -m proxy.simulator`, one process) serves the four providers.
3. Steady: for `--seconds`, 1% of the pairs (20) get a new sample every second (written
   through RedisStore, as other replicas' traffic would be). Refresh CPU per replica =
   the replica process's CPU (psutil) over the phase / refreshes (and, before it, the
   same process's CPU per second with nothing changing); of it, the scoreboard's scoring
   (/admin/status `scoreboard_last_refresh_cpu_s`, the last refresh) and the store's pull
   (`changed_windows` of a fourth reader in this process: median and max). Redis round
   trips/s = `total_reads_processed` (socket reads: a pipeline mostly arrives in one) and
   commands/s (Lua's calls included) of every data node, replication and Sentinel included.
4. Propagation: a request through replica 1, then the time until replicas 2 and 3 count
   its sample in /admin/scores (10 requests; median and max).
5. Cold start: a fourth replica, from start to /readyz "ready" (its first refresh read
   every window), and its CPU by then.
6. Failover (sentinel, cluster): `--rate` requests/s through the three replicas (open loop,
   round robin, 20 models), the primary killed (`kill -9`; on the Cluster the one holding
   the change index) a third of the way in. Failed client requests; seconds until the
   deployment served writes again; after the load, seconds until every replica's scores
   count what Redis holds; acknowledged samples lost (served + prefill - stored).

Nothing here is a CI test: it prints figures (docs/deployment.md, "Sizing").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet import Child, Fleet, free_port

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.redis_schema import changes_key, window_key
from proxy.learning.store.redis_store import RedisStore
from proxy.settings.config import RedisStoreConfig
from tests.redis_server import (
    LocalCluster,
    LocalSentinels,
    RedisServer,
    wait_sync,
)

PROVIDERS = [f"prov-{i}" for i in range(4)]
KEY, ADMIN = "fleet-key", "fleet-admin"
HOT_MODELS = 20  # the models with traffic in the propagation and failover phases


@dataclass
class Deployment:
    """One Redis deployment of the run: its URL, its data nodes, how to kill its primary."""

    name: str
    url: str
    owner: Any  # RedisServer, LocalSentinels or LocalCluster

    @classmethod
    def start(cls, name: str, workdir: Path) -> Deployment:
        if name == "single":
            server = RedisServer(workdir).start()
            return cls(name, server.url, server)
        if name == "sentinel":
            sentinels = LocalSentinels(workdir).start()
            return cls(name, sentinels.url(), sentinels)
        cluster = LocalCluster(workdir).start()
        return cls(name, cluster.url(), cluster)

    def stop(self) -> None:
        getattr(self.owner, "stop", getattr(self.owner, "kill", None))()

    def nodes(self) -> list[RedisServer]:
        if isinstance(self.owner, RedisServer):
            return [self.owner]
        if isinstance(self.owner, LocalSentinels):
            return [s for s in self.owner.servers if s.alive]
        return [n for n in self.owner.nodes if n.alive]

    def primaries(self) -> list[RedisServer]:
        if isinstance(self.owner, LocalCluster):
            return self.owner.primaries()
        return [n for n in self.nodes() if n.call("ROLE")[0] == b"master"]

    def primary_for(self, key: str) -> RedisServer:
        if isinstance(self.owner, LocalCluster):
            return self.owner.primary_of(key)
        return self.primaries()[0]

    def kill_primary(self) -> RedisServer:
        if isinstance(self.owner, LocalCluster):
            victim = self.owner.primary_of(changes_key("ttft"))
        else:
            victim = self.owner.current_primary()
        victim.kill()
        return victim

    def recovered(self, victim: RedisServer) -> bool:
        if isinstance(self.owner, LocalCluster):
            return self.owner.has_three_primaries()
        primary = self.owner.current_primary()
        return primary is not None and primary is not victim and primary.alive

    def info(self, primaries_only: bool = False) -> Counter[str]:
        """Summed INFO fields of the (live) data nodes."""
        total: Counter[str] = Counter()
        for node in self.primaries() if primaries_only else self.nodes():
            with node.client() as client:
                info = client.info()
            for field_name in ("used_memory_dataset", "total_commands_processed",
                               "total_reads_processed"):  # fmt: skip
                total[field_name] += int(info[field_name])
            total["cpu_s"] += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total


def scenario(models: int, ports: list[int]) -> dict[str, Any]:
    quick = {"warm_ttft": {"median_s": 0.005, "sigma": 0.2}, "tokens_per_s": 5000,
             "max_concurrency": 1000}  # fmt: skip
    return {"providers": {
        name: {"api_key": f"sim-{name}", "port": port,
               "models": {f"m{m}-{name}": quick for m in range(models)}}
        for name, port in zip(PROVIDERS, ports, strict=True)
    }}  # fmt: skip


def replica_config(name: str, port: int, ports: list[int], url: str, models: int,
                   policy: Path) -> str:  # fmt: skip
    return yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": port, "replica_id": name, "log_level": "warning"},
        "auth": {"api_keys": [KEY], "admin_keys": [ADMIN]},
        "providers": {p: {"kind": "openai", "base_url": f"http://127.0.0.1:{sim}/v1",
                          "api_key": f"sim-{p}"} for p, sim in zip(PROVIDERS, ports, strict=True)},
        "models": {f"m{m}": {"providers": {p: f"m{m}-{p}" for p in PROVIDERS}}
                   for m in range(models)},
        "store": {"kind": "redis", "url": url, "max_samples": 1000},
        "policies": [str(policy)],
        "prober": {"enabled": False},
    })  # fmt: skip


def store_config(url: str) -> RedisStoreConfig:
    return RedisStoreConfig(kind="redis", url=url, max_samples=1000, connect_timeout_s=2,
                            socket_timeout_s=2)  # fmt: skip


async def prefill(url: str, pairs: list[Pair], window: int) -> None:
    store = RedisStore(store_config(url), "prefill")
    await store.start()
    now = time.time()
    try:
        for start in range(0, len(pairs), 25):
            batch = [Sample(p.model, p.provider, Outcome.OK, 0.005 + 0.0001 * i,
                            round(now - 600 + i * 600 / window, 6), replica="prefill")
                     for p in pairs[start : start + 25] for i in range(window)]  # fmt: skip
            await store.append(batch, [])
    finally:
        await store.close()


async def admin(http: aiohttp.ClientSession, replica: Child, path: str, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.get(replica.url + path, params=params, headers=headers) as response:
        return await response.json()


async def counts(http: aiohttp.ClientSession, replica: Child, model: str) -> dict[str, int]:
    rows = (await admin(http, replica, "/admin/scores", model=model))["pairs"]
    return {row["provider"]: row["n_attempts"] for row in rows}


async def ask(http: aiohttp.ClientSession, replica: Child, model: str) -> str:
    """One chat completion; returns the provider that served it. Raises on any failure."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with http.post(replica.url + "/v1/chat/completions", json=body,
                         headers=headers) as response:  # fmt: skip
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return response.headers["x-ttft-router-provider"]


async def wait_for(condition: Any, timeout: float, interval: float = 0.01) -> float:
    """Seconds until the async `condition` holds; raises after `timeout`."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not within {timeout} s: {condition}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def ready(http: aiohttp.ClientSession, replica: Child) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        return bool((await admin(http, replica, "/readyz"))["status"] == "ready")
    return False


@dataclass
class Run:
    deployment: Deployment
    fleet: Fleet
    args: argparse.Namespace
    sim_ports: list[int]
    policy: Path
    replicas: list[Child] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def start_replica(self, name: str) -> Child:
        port = free_port()
        text = replica_config(name, port, self.sim_ports, self.deployment.url,
                              self.args.models, self.policy)  # fmt: skip
        return self.fleet.serve(name, text, port)

    async def steady(self, http: aiohttp.ClientSession, pairs: list[Pair]) -> None:
        writer = RedisStore(store_config(self.deployment.url), "fleet-traffic")
        reader = RedisStore(store_config(self.deployment.url), "fleet-reader")  # in-process
        await writer.start()
        await reader.start()
        known = {p: w.version for p, w in (await reader.changed_windows({})).items()}
        idle = await self.idle_cpu(5.0)
        cpu = [r.cpu_s() for r in self.replicas]
        redis = self.deployment.info()
        pulls = []
        start = time.monotonic()
        for second in range(self.args.seconds):
            changed = random.sample(pairs, max(1, len(pairs) // 100))
            now = time.time()
            await writer.append([Sample(p.model, p.provider, Outcome.OK, 0.006, now,
                                        replica="fleet-traffic") for p in changed], [])  # fmt: skip
            pull = time.process_time()
            known |= {p: w.version for p, w in (await reader.changed_windows(known)).items()}
            pulls.append(time.process_time() - pull)
            await asyncio.sleep(max(0.0, start + second + 1 - time.monotonic()))
        wall = time.monotonic() - start
        await writer.close()
        await reader.close()
        used = [r.cpu_s() - before for r, before in zip(self.replicas, cpu, strict=True)]
        after = self.deployment.info()
        status = [await admin(http, r, "/admin/status") for r in self.replicas]
        refreshes = wall / 1.0  # scoreboard.refresh_s
        self.figures |= {
            "refresh_cpu_ms": [round(1000 * u / refreshes, 1) for u in used],
            "idle_cpu_ms_per_s": [round(1000 * i, 1) for i in idle],
            "scoring_cpu_ms": [round(1000 * s["scoreboard_last_refresh_cpu_s"], 1)
                               for s in status],
            "store_pull_cpu_ms": (round(1000 * statistics.median(pulls), 1),
                                  round(1000 * max(pulls), 1)),
            "round_trips_per_s": round(
                (after["total_reads_processed"] - redis["total_reads_processed"]) / wall),
            "commands_per_s": round(
                (after["total_commands_processed"] - redis["total_commands_processed"]) / wall),
            "redis_cpu_ms_per_s": round(1000 * (after["cpu_s"] - redis["cpu_s"]) / wall, 1),
        }  # fmt: skip

    async def idle_cpu(self, seconds: float) -> list[float]:
        """Each replica's CPU per second while nothing changes (refreshes that find nothing,
        the event loop, the buffer's flusher)."""
        before = [r.cpu_s() for r in self.replicas]
        await asyncio.sleep(seconds)
        return [(r.cpu_s() - b) / seconds for r, b in zip(self.replicas, before, strict=True)]

    async def propagation(self, http: aiohttp.ClientSession) -> None:
        one, *others = self.replicas
        times = []
        for i in range(10):
            model = f"m{i % HOT_MODELS}"
            before = [await counts(http, r, model) for r in others]
            provider = await ask(http, one, model)
            sent = time.monotonic()

            async def everywhere(b: list[dict[str, int]] = before, m: str = model,
                                 p: str = provider) -> bool:  # fmt: skip
                now = [await counts(http, r, m) for r in others]
                return all(n.get(p, 0) > old.get(p, 0) for n, old in zip(now, b, strict=True))

            await wait_for(everywhere, 10)
            times.append(time.monotonic() - sent)
        self.figures["propagation_s"] = (round(statistics.median(times), 2),
                                         round(max(times), 2))  # fmt: skip

    async def cold_start(self, http: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        fourth = self.start_replica("r4")
        await wait_for(lambda: ready(http, fourth), 120, 0.05)
        self.figures["cold_start_s"] = round(time.monotonic() - started, 1)
        self.figures["cold_start_cpu_s"] = round(fourth.cpu_s(), 1)
        self.fleet.stop(fourth)

    async def failover(self, http: aiohttp.ClientSession) -> None:
        load = Load(http, self.replicas, self.args.rate)
        hot = [Pair(f"m{m}", p) for m in range(HOT_MODELS) for p in PROVIDERS]
        before = await asyncio.to_thread(self.stored, hot)
        runner = asyncio.create_task(load.run(self.args.failover_s))
        await asyncio.sleep(self.args.failover_s / 3)
        killed = time.monotonic()
        victim = self.deployment.kill_primary()
        await asyncio.to_thread(wait_sync, lambda: self.deployment.recovered(victim), 60,
                                "failover")  # fmt: skip
        recovered_s = time.monotonic() - killed
        await runner
        await wait_for(lambda: self.flushed(http), 60, 0.05)
        agree_s = await wait_for(lambda: self.agreed(http, hot), 30, 0.05)
        stored = sum(self.stored(hot).values())
        expected = sum(before.values()) + sum(load.served.values())
        self.figures |= {
            "failover_rate": round(load.sent / self.args.failover_s),
            "failed_requests": load.failed,
            "failover_s": round(recovered_s, 1),
            "agree_after_flush_s": round(agree_s, 2),
            "samples_served": sum(load.served.values()),
            "lost_samples": expected - stored,
        }

    async def flushed(self, http: aiohttp.ClientSession) -> bool:
        for replica in self.replicas:
            store = (await admin(http, replica, "/admin/status"))["store"]
            if not store["ok"] or store["buffered_samples"]:
                return False
        return True

    def stored(self, pairs: list[Pair]) -> dict[Pair, int]:
        out = {}
        for pair in pairs:
            key = window_key("ttft", pair)
            out[pair] = int(self.deployment.primary_for(key).call("ZCARD", key))
        return out

    async def agreed(self, http: aiohttp.ClientSession, pairs: list[Pair]) -> bool:
        held = await asyncio.to_thread(self.stored, pairs)
        for replica in self.replicas:
            for model in {p.model for p in held}:
                seen = await counts(http, replica, model)
                if any(seen.get(p.provider, 0) != n for p, n in held.items() if p.model == model):
                    return False
        return True


@dataclass
class Load:
    """Open loop: `rate` requests/s, round robin over the replicas and the hot models."""

    http: aiohttp.ClientSession
    replicas: list[Child]
    rate: float
    sent: int = 0
    failed: int = 0
    served: Counter[Pair] = field(default_factory=Counter)

    async def one(self, replica: Child, model: str) -> None:
        try:
            self.served[Pair(model, await ask(self.http, replica, model))] += 1
        except Exception:  # a failed client request is what this counts
            self.failed += 1

    async def run(self, seconds: float) -> None:
        tasks = set()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            replica = self.replicas[self.sent % len(self.replicas)]
            task = asyncio.create_task(self.one(replica, f"m{self.sent % HOT_MODELS}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.sent += 1
            await asyncio.sleep(max(0.0, start + self.sent / self.rate - time.monotonic()))
        await asyncio.gather(*tasks)


async def run_one(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    deployment = Deployment.start(name, workdir)
    fleet = Fleet(pin=False)
    try:
        pairs = [Pair(f"m{m}", p) for m in range(args.models) for p in PROVIDERS]
        empty = deployment.info(primaries_only=True)["used_memory_dataset"]
        await prefill(deployment.url, pairs, args.window)
        full = deployment.info(primaries_only=True)["used_memory_dataset"]
        ports = [free_port() for _ in PROVIDERS]
        path = workdir / "scenario.yaml"
        path.write_text(yaml.safe_dump(scenario(args.models, ports)))
        fleet.simulator(path, ports[-1])
        policy = workdir / "policy.yaml"
        policy.write_text("defaults: {window: {max_samples: 5000}}\n")
        run = Run(deployment, fleet, args, ports, policy)
        run.figures["memory_per_pair_kb"] = round((full - empty) / len(pairs) / 1024, 1)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            run.replicas = [run.start_replica(f"r{i}") for i in (1, 2, 3)]
            for replica in run.replicas:
                await wait_for(lambda r=replica: ready(http, r), 120, 0.05)
            await run.steady(http, pairs)
            await run.propagation(http)
            await run.cold_start(http)
            if name != "single" and args.rate > 0:
                await run.failover(http)
        return run.figures
    finally:
        fleet.stop_all()
        deployment.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", default="single,sentinel,cluster")
    parser.add_argument("--models", type=int, default=500, help="x 4 providers = pairs")
    parser.add_argument("--window", type=int, default=200, help="prefilled samples per pair")
    parser.add_argument("--seconds", type=int, default=20, help="the steady phase")
    parser.add_argument("--rate", type=float, default=200, help="requests/s in the failover")
    parser.add_argument("--failover-s", type=float, default=30)
    args = parser.parse_args()
    results = {}
    for name in args.deployments.split(","):
        with tempfile.TemporaryDirectory(prefix=f"redis-fleet-{name}-") as workdir:
            results[name] = asyncio.run(run_one(name, args, Path(workdir)))
        print(f"{name}: {results[name]}", flush=True)
    print(f"\n{args.models * len(PROVIDERS)} pairs, {args.window} samples each, 3 replicas, "
          f"1% of the pairs changing per second")  # fmt: skip
    for name, figures in results.items():
        print(f"| {name} | " + " | ".join(f"{k}={v}" for k, v in figures.items()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
