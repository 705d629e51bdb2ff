"""What the Redis store costs: ingest rate, and one scoreboard refresh at 10,000 pairs.

    .venv/bin/python benchmarks/store_bench.py            # starts its own redis-server
    .venv/bin/python benchmarks/store_bench.py --url redis://127.0.0.1:6380/0

1. Ingest: samples/s through SampleBuffer + RedisStore (batches of the buffer's size).
2. Prefill: models x providers pairs with full windows, written by a "replica" store;
   Redis memory before and after (INFO memory), MEMORY USAGE of one window.
3. Cold refresh: a new replica's store + Scoreboard reading everything (its start).
4. Steady refresh: each round another replica appends one sample to ~1% of the pairs,
   then the reader's Scoreboard refreshes; CPU (process time), wall time and bytes Redis
   sent (INFO stats total_net_output_bytes; this benchmark is Redis's only client).
5. The scoreboard's periodic pass (every full_every_s it rescores from what it holds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis.asyncio import Redis

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.scoreboard import Scoreboard
from proxy.learning.stats import compute_score
from proxy.learning.store.buffer import SampleBuffer
from proxy.learning.store.redis_store import RedisStore
from proxy.settings.config import BufferConfig, RedisStoreConfig
from proxy.settings.policy import PolicyHolder, WindowParams


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis to use (default: start redis-server on a free port)")
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--providers", type=int, default=10)
    parser.add_argument("--window", type=int, default=200, help="samples per pair")
    parser.add_argument("--changed", type=float, default=0.01, help="share of pairs per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--ingest", type=int, default=100_000, help="samples for part 1")
    parser.add_argument(
        "--listpack",
        action="store_true",
        help="CONFIG SET zset-max-listpack-* so windows are listpacks (compact), not skiplists",
    )
    args = parser.parse_args()
    with redis_url(args.url) as url:
        asyncio.run(run(url, args))
    return 0


@contextlib.contextmanager
def redis_url(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: install it or pass --url")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                 check=False).stdout.strip() != b"PONG":  # fmt: skip
                assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


def store_config(url: str, prefix: str, window: int) -> RedisStoreConfig:
    return RedisStoreConfig(kind="redis", url=url, prefix=prefix, max_samples=window,
                            max_age_s=7200.0)  # fmt: skip


def sample(pair: Pair, ts: float, replica: str) -> Sample:
    ttft = random.lognormvariate(-1.0, 0.5)
    return Sample(pair.model, pair.provider, Outcome.OK, ttft, ts, ttfb_s=ttft * 0.9,
                  total_s=ttft + 2.0, prompt_tokens=random.randint(10, 4000),
                  replica=replica)  # fmt: skip


async def measured(work: Callable[[], Awaitable[Any]], admin: Redis) -> dict[str, float]:
    """CPU seconds (this process), wall seconds and bytes Redis sent while `work` ran (less
    the reply to the first INFO, which is counted after its figure was taken)."""
    before = await admin.info("stats")
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = (await admin.info("stats"))["total_net_output_bytes"]
    info_reply = len("".join(f"{k}:{v}\r\n" for k, v in before.items())) + 40
    sent = after - before["total_net_output_bytes"] - info_reply
    return {"cpu_s": cpu, "wall_s": wall, "bytes_out": float(max(sent, 0))}


async def run(url: str, args: argparse.Namespace) -> None:
    admin = Redis.from_url(url, protocol=2)
    server = (await admin.info("server"))["redis_version"]
    print(f"redis {server} at {url}; python {sys.version.split()[0]}")
    if args.listpack:
        await admin.config_set("zset-max-listpack-entries", str(args.window))
        await admin.config_set("zset-max-listpack-value", "128")
        print(f"windows as listpacks: zset-max-listpack-entries {args.window}, -value 128")
    await ingest(url, args.ingest)
    pairs = [Pair(f"model-{m:04d}", f"provider-{p:02d}")
             for m in range(args.models) for p in range(args.providers)]  # fmt: skip
    await prefill(url, admin, pairs, args.window)
    reader = RedisStore(store_config(url, "bench", args.window), "reader")
    writer = RedisStore(store_config(url, "bench", args.window), "writer-2")
    await reader.start()
    await writer.start()
    board = Scoreboard(reader, PolicyHolder([]), full_every_s=3600.0)
    cold = await measured(board.refresh, admin)
    print(f"\ncold refresh (a replica starting): {len(board.snapshot)} pairs, "
          f"{len(pairs) * args.window:,} samples")  # fmt: skip
    report(cold, board)
    await steady(board, writer, admin, pairs, args)
    periodic = Scoreboard(reader, PolicyHolder([]), full_every_s=0.0)
    await periodic.refresh()  # fills its windows
    pass_cost = await measured(periodic.refresh, admin)
    print("\nthe scoreboard's periodic pass (every full_every_s: find and rescore the pairs whose "
          "window lost a sample to age; none here):")  # fmt: skip
    report(pass_cost, periodic)
    await sweep(url, admin, args.window)
    score_cost(pairs[0], args.window)
    await reader.close()
    await writer.close()
    await admin.aclose()


async def ingest(url: str, count: int) -> None:
    store = RedisStore(store_config(url, "ingest", 1000), "ingest")
    await store.start()
    buffer = SampleBuffer(BufferConfig(max_items=count), store)
    pairs = [Pair(f"model-{m:03d}", f"provider-{p}") for m in range(200) for p in range(5)]
    now = time.time()
    for i in range(count):
        buffer.add_sample(sample(pairs[i % len(pairs)], now - (count - i) * 1e-3, "ingest"))
    cpu, wall = time.process_time(), time.perf_counter()
    written = await buffer.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"\ningest: {written:,} samples over {len(pairs)} pairs through SampleBuffer + "
          f"RedisStore in batches of {BufferConfig().batch_size}: {written / wall:,.0f} "
          f"samples/s ({wall:.2f} s wall, {cpu:.2f} s CPU in this process)")  # fmt: skip
    await store.close()


async def prefill(url: str, admin: Redis, pairs: list[Pair], window: int) -> None:
    store = RedisStore(store_config(url, "bench", window), "writer-1")
    await store.start()
    mem_before = (await admin.info("memory"))["used_memory"]
    now = time.time()
    started = time.perf_counter()
    per_batch = max(1, 5000 // window)
    for i in range(0, len(pairs), per_batch):
        batch = [sample(pair, now - 1800.0 + j * (1800.0 / window), "writer-1")
                 for pair in pairs[i : i + per_batch] for j in range(window)]  # fmt: skip
        await store.append(batch, [])
    wall = time.perf_counter() - started
    mem_after = (await admin.info("memory"))["used_memory"]
    total = len(pairs) * window
    one = await admin.memory_usage(f"bench:{{{pairs[0].model}}}:w:{pairs[0].provider}", samples=0)
    member = (await admin.zrange(f"bench:{{{pairs[0].model}}}:w:{pairs[0].provider}", -1, -1))[0]
    print(f"\nprefill: {len(pairs):,} pairs x {window} samples = {total:,} samples in "
          f"{wall:.1f} s ({total / wall:,.0f} samples/s)")  # fmt: skip
    print(f"  Redis memory +{(mem_after - mem_before) / 2**20:,.1f} MiB "
          f"({(mem_after - mem_before) / total:.0f} B/sample); MEMORY USAGE of one window: "
          f"{one:,} B; one packed sample: {len(member)} B")  # fmt: skip
    await store.close()


async def steady(
    board: Scoreboard, writer: RedisStore, admin: Redis, pairs: list[Pair], args: argparse.Namespace
) -> None:
    changed = max(1, round(len(pairs) * args.changed))
    rounds: list[dict[str, float]] = []
    rescored = []
    for _ in range(args.rounds):
        await asyncio.sleep(1.0)  # the scoreboard's refresh_s: the index re-read overlaps 1 s
        now = time.time()
        await writer.append([sample(p, now, "writer-2") for p in random.sample(pairs, changed)], [])
        rounds.append(await measured(board.refresh, admin))
        rescored.append(board.last_refresh_cpu_s)
    await asyncio.sleep(1.0)
    idle = await measured(board.refresh, admin)
    print(f"\nsteady refresh: {changed} of {len(pairs):,} pairs changed since the last one "
          f"({args.rounds} rounds; median / max)")  # fmt: skip
    for key, unit, digits in (
        ("cpu_s", "s CPU", 4), ("wall_s", "s wall", 4), ("bytes_out", "B from Redis", 0)
    ):  # fmt: skip
        values = [r[key] for r in rounds]
        print(f"  {statistics.median(values):,.{digits}f} / {max(values):,.{digits}f} {unit}")
    print(f"  of which rescoring (stats.compute_score): median "
          f"{statistics.median(rescored):.4f} s CPU")  # fmt: skip
    print(f"  nothing changed: {idle['cpu_s']:.4f} s CPU, {idle['wall_s']:.4f} s wall, "
          f"{idle['bytes_out']:,.0f} B")  # fmt: skip


def report(cost: dict[str, float], board: Scoreboard) -> None:
    print(f"  {cost['cpu_s']:.2f} s CPU, {cost['wall_s']:.2f} s wall, "
          f"{cost['bytes_out'] / 2**20:,.1f} MiB from Redis; of which rescoring "
          f"(stats.compute_score) {board.last_refresh_cpu_s:.2f} s CPU")  # fmt: skip


async def sweep(url: str, admin: Redis, window: int) -> None:
    """The store's version sweep done at once (sweep_s ~ 0): every pair's version compared,
    one HGETALL a model. In service it is spread over sweep_s / refresh_s refreshes."""
    config = store_config(url, "bench", window).model_copy(update={"sweep_s": 1e-3})
    store = RedisStore(config, "sweeper")
    await store.start()
    known = {pair: w.version for pair, w in (await store.changed_windows({})).items()}
    cost = await measured(lambda: store.changed_windows(known), admin)
    print(
        f"\nthe store's version sweep of every pair at once (in service spread over "
        f"sweep_s=30 s of refreshes): {cost['cpu_s']:.3f} s CPU, "
        f"{cost['wall_s']:.3f} s wall, {cost['bytes_out'] / 2**10:,.0f} KiB from Redis"
    )
    await store.close()


def score_cost(pair: Pair, window: int) -> None:
    now = time.time()
    samples = [sample(pair, now - window + i, "x") for i in range(window)]
    runs = 200
    cpu = time.process_time()
    for _ in range(runs):
        compute_score(pair, samples, WindowParams(), now)
    per = (time.process_time() - cpu) / runs
    print(f"\nstats.compute_score on {window} samples: {per * 1e3:.2f} ms CPU per pair")


if __name__ == "__main__":
    sys.exit(main())
