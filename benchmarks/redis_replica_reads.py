"""Do READONLY replica reads pay on a Redis Cluster? The store's refresh, read from the
primaries (what ships) against read from the replicas, at 2,000 pairs with 1% changing.

    .venv/bin/python benchmarks/redis_replica_reads.py

A Cluster of three primaries with a replica each is started here (loopback, stopped by
PID) and prefilled (500 models x 4 providers, 200 samples a pair). Then, for each mode, a
reader (the store's own RemoteReader, its commands run through a RedisCluster client) pulls
after every round in which a writer (RedisStore) appended one sample to 20 pairs. In the
replica mode the client has `load_balancing_strategy=ROUND_ROBIN_REPLICAS` (READONLY
connections), and the window reads go as EVALSHA_RO so that replicas may serve them.
Per pull: the reader's CPU and wall time; over the rounds: the Redis CPU of the primaries
and of the replicas (INFO used_cpu_*), and the pulls that missed a sample the writer had
had acknowledged before the pull began (a replica behind its primary).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.cluster import LoadBalancingStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.local_windows import LocalWindows
from proxy.learning.store.redis_commands import Commands
from proxy.learning.store.redis_reader import RemoteReader
from proxy.learning.store.redis_schema import READ_WINDOW, SCRIPTS, Command
from proxy.learning.store.redis_store import RedisStore
from proxy.settings.config import RedisStoreConfig
from tests.redis_server import LocalCluster, RedisServer


def config(url: str) -> RedisStoreConfig:
    return RedisStoreConfig(kind="redis", url=url, max_samples=1000, socket_timeout_s=5,
                            connect_timeout_s=5)  # fmt: skip


def cpu_s(nodes: Sequence[RedisServer]) -> float:
    total = 0.0
    for node in nodes:
        with node.client() as client:
            info = client.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


async def prefill(url: str, pairs: list[Pair], window: int) -> None:
    store = RedisStore(config(url), "prefill")
    await store.start()
    now = time.time()
    for start in range(0, len(pairs), 25):
        chunk = pairs[start : start + 25]
        samples = [Sample(p.model, p.provider, Outcome.OK, 0.005, now - 600 + i, replica="p")
                   for p in chunk for i in range(window)]  # fmt: skip
        await store.append(samples, [])
    await store.close()


async def measure(cluster: LocalCluster, pairs: list[Pair], replicas: bool,
                  rounds: int) -> dict[str, Any]:  # fmt: skip
    nodes = [ClusterNode("127.0.0.1", n.port) for n in cluster.nodes]
    strategy = LoadBalancingStrategy.ROUND_ROBIN_REPLICAS if replicas else None
    client = RedisCluster(startup_nodes=nodes, protocol=2, load_balancing_strategy=strategy)
    for node in cluster.nodes:  # replicas need the scripts too: SCRIPT LOAD goes to primaries
        for script in SCRIPTS:
            node.call("SCRIPT", "LOAD", script.text)

    async def execute(commands: Sequence[Command]) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            for command in commands:
                if replicas and command[:2] == ("EVALSHA", READ_WINDOW.sha):
                    command = ("EVALSHA_RO", *command[1:])
                pipe.execute_command(*command)
            return list(await pipe.execute())

    url = cluster.url()
    view = LocalWindows(1000, 86400)
    reader = RemoteReader(Commands(config(url), "bench"), view, 30.0, "bench")
    writer = RedisStore(config(url), "writer")
    await writer.start()
    await reader.pull(execute)  # the cold read, not measured
    primaries = [n for n in cluster.nodes if n.call("ROLE")[0] == b"master"]
    secondaries = [n for n in cluster.nodes if n not in primaries]
    cpu, wall, missed = [], [], 0
    redis_before = (cpu_s(primaries), cpu_s(secondaries))
    for _ in range(rounds):
        changed = random.sample(pairs, len(pairs) // 100)
        now = round(time.time(), 6)  # as stored: a sample reads back equal
        written = [Sample(p.model, p.provider, Outcome.OK, 0.007, now, replica="w")
                   for p in changed]  # fmt: skip
        await writer.append(written, [])
        started_cpu, started = time.process_time(), time.perf_counter()
        await reader.pull(execute)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
        missed += any(s not in view.samples(s.pair) for s in written)
        await asyncio.sleep(0.2)
    redis_after = (cpu_s(primaries), cpu_s(secondaries))
    await writer.close()
    await client.aclose()
    return {
        "reader_cpu_ms": round(1000 * statistics.median(cpu), 1),
        "wall_ms": round(1000 * statistics.median(wall), 1),
        "primaries_cpu_ms_per_round": round(1000 * (redis_after[0] - redis_before[0]) / rounds, 2),
        "replicas_cpu_ms_per_round": round(1000 * (redis_after[1] - redis_before[1]) / rounds, 2),
        "pulls_that_missed_an_acknowledged_sample": f"{missed} of {rounds}",
    }


async def run(args: argparse.Namespace, workdir: Path) -> None:
    cluster = LocalCluster(workdir).start()
    try:
        pairs = [Pair(f"m{m}", f"p{p}") for m in range(args.models) for p in range(4)]
        await prefill(cluster.url(), pairs, args.window)
        for replicas in (False, True):
            figures = await measure(cluster, pairs, replicas, args.rounds)
            print(f"{'replicas' if replicas else 'primaries'}: {figures}", flush=True)
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500, help="x 4 providers = pairs")
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="redis-replica-reads-") as workdir:
        asyncio.run(run(args, Path(workdir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
