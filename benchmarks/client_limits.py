"""What named clients and their limits cost, and whether a limit holds across replicas.

    .venv/bin/python benchmarks/client_limits.py micro            # in process, memory store
    .venv/bin/python benchmarks/client_limits.py redis            # one redis-server of its own
    .venv/bin/python benchmarks/client_limits.py fleet --minutes 3

micro: with 1,000 named keys, each with every limit and a budget: the key's look-up
    (Registry.identify), one admission (Gate.admit) and admission + charge (what a request
    pays) with the memory store, in microseconds (best of --repeat runs of --number).
redis: the same admission through RedisStore (one ADMIT_CLIENT script, awaited: the one
    round trip on a limited key's request path), its latency; and charges, which the gate
    pipelines off the request path: round trips per request at a steady rate.
fleet: 3 `ttft-router serve` replicas on one redis-server, each offered --rate requests/s
    (open loop, aiohttp) by one key limited to --limit requests/minute, for --minutes. Prints
    the requests served in each minute of the run (the target: the limit, +-5%), and the
    store's round trips per request (ADMIT_CLIENT calls and charge pipelines per request,
    from Redis's INFO commandstats and each replica's /admin/clients).

The proxy's own CPU with and without 1,000 keys is `overhead.py --clients 1000 --limits`.
Nothing here is a CI test: it prints figures (docs/clients.md, "What it costs").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet import Fleet, free_port

from proxy.clients import Client, Gate, Registry
from proxy.learning.store.base import ClientAsk, ClientLimits
from proxy.learning.store.memory import MemoryStore
from proxy.learning.store.redis_store import RedisStore
from proxy.settings.auth import AuthConfig
from proxy.settings.config import MemoryStoreConfig, RedisStoreConfig
from proxy.telemetry.metrics import Metrics
from tests.redis_server import RedisServer

ADMIN = "bench-admin-key-7e1c3a9f5d2b8c4e"
RULES = {"limits": {"requests_per_minute": 100_000_000, "tokens_per_minute": 10**12,
                    "concurrent_requests": 200_000},
         "budget": {"usd_per_day": 1e6, "usd_per_month": 1e7}}  # fmt: skip


def registry(count: int) -> tuple[Registry, list[str]]:
    keys = [f"bench-{i:04d}-client-key-5f3a9c1e7b2d" for i in range(count)]
    clients = {f"client-{i:04d}": {"key": key, **RULES} for i, key in enumerate(keys)}
    return Registry(AuthConfig.model_validate({"clients": clients}), 900.0), keys


async def best_us(step: Any, number: int, repeat: int) -> float:
    """Best of `repeat` runs of `number` awaited calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for _ in range(number):
            await step()
        best = min(best, (time.perf_counter() - began) / number * 1e6)
    return best


async def micro(args: argparse.Namespace) -> None:
    reg, keys = registry(args.keys)
    client = reg.identify(keys[-1])
    assert client is not None and client.limits is not None
    unlimited = Registry(AuthConfig.model_validate({"api_keys": [keys[0]]}), 900.0).anonymous

    async def identify() -> None:
        reg.identify(keys[-1])

    def gate() -> Gate:
        return Gate(MemoryStore(MemoryStoreConfig()), Metrics(), share=1.0)

    admits, requests = gate(), gate()

    async def admit() -> None:  # never charged: its slots stay taken (100,000 of them)
        await admits.admit(client, 100)

    async def request(who: Client = client) -> None:
        await requests.charge(await requests.admit(who, 100), 80, 0.0001)

    async def anonymous() -> None:
        await request(unlimited)

    n, r = args.number, args.repeat
    print(f"{args.keys} named keys, each with every limit and a budget; memory store")
    for name, step in (("key look-up (Registry.identify)", identify),
                       ("admission of a limited key (Gate.admit)", admit),
                       ("admission + charge of a limited key (a request)", request),
                       ("admission + charge of a key without limits", anonymous)):  # fmt: skip
        print(f"  {name:<52}{await best_us(step, n, r):8.2f} us")


async def redis_store(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-clients-"))
    server = await RedisServer(workdir).start_async()
    try:
        store = RedisStore(RedisStoreConfig(kind="redis", url=server.url), "bench")
        await store.start()
        limits = ClientLimits(requests=10**8, tokens=10**10, concurrent=10**5,
                              usd_per_day=1e6, usd_per_month=1e7)  # fmt: skip
        ids = iter(range(10**9))

        async def admit() -> None:
            await store.admit_client(ClientAsk("app", f"r{next(ids)}", 100, "20250131",
                                               "202501"), limits)  # fmt: skip

        us = await best_us(admit, args.number // 10, args.repeat)
        print(f"RedisStore.admit_client on a local redis-server: {us:.0f} us per admission "
              "(one ADMIT_CLIENT round trip, awaited on the request path)")  # fmt: skip
        for capped in (True, False):
            await steady(store, args.rate, capped)
        await store.close()
    finally:
        server.kill()


async def steady(store: RedisStore, rate: float, capped: bool) -> None:
    """A limited key's requests at `rate` for 5 s: round trips to the store per request."""
    rules = dict(RULES["limits"])
    if not capped:
        del rules["concurrent_requests"]
    app = {"key": "steady-app-key-4c8e1a7d3f9b", "limits": rules, "budget": RULES["budget"]}
    auth = AuthConfig.model_validate({"clients": {"app": app}})
    client = Registry(auth, 900.0).by_name["app"]
    gate = Gate(store, Metrics(), share=1.0)
    stop = asyncio.Event()
    flusher = asyncio.create_task(gate.run(stop))
    sent = 0
    began = time.perf_counter()
    while time.perf_counter() - began < 5.0:
        await gate.charge(await gate.admit(client, 100), 80, 0.0001)
        sent += 1
        await asyncio.sleep(1 / rate)
    await asyncio.sleep(0.2)
    stop.set()
    await flusher
    trips = sent + gate.charge_batches
    what = "with a concurrency cap: charges sent at once" if capped else (
        "without a concurrency cap: charges carried or batched")  # fmt: skip
    print(
        f"  {rate:.0f} requests/s, a key {what}: {sent} admissions (1 round trip each, on "
        f"the request path), {gate.carried_charges} charges carried by them, "
        f"{gate.charge_batches} charge pipelines: {trips / sent:.2f} round trips per request"
    )


def replica_config(port: int, redis_url: str, upstream: str, name: str, args: Any) -> str:
    return yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": port, "replica_id": name, "log_level": "warning"},
        "auth": {"admin_keys": [ADMIN], "clients": {"fleet-app": {
            "key": args.key, "limits": {"requests_per_minute": args.limit}}}},
        "store": {"kind": "redis", "url": redis_url},
        "prober": {"enabled": False},
        "providers": {"upstream": {"kind": "openai", "base_url": upstream + "/v1"}},
        "models": {"bench-model": {"providers": {"upstream": "upstream-model"}}},
    })  # fmt: skip


async def offer(
    session: aiohttp.ClientSession, url: str, key: str, rate: float, until: float,
    began: float, results: list[tuple[float, int]],
) -> None:  # fmt: skip
    """Open loop: a request every 1/rate s whatever the answers, at most 200 in flight."""
    body = {"model": "bench-model", "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    in_flight: set[asyncio.Task[None]] = set()

    async def one(sent_at: float) -> None:
        try:
            async with session.post(url + "/v1/chat/completions", json=body,
                                    headers=headers) as reply:  # fmt: skip
                await reply.read()
                results.append((sent_at - began, reply.status))
        except aiohttp.ClientError:
            results.append((sent_at - began, 0))

    tick = 1 / rate
    next_at = time.perf_counter()
    while (now := time.perf_counter()) < until:
        if len(in_flight) < 200:
            task = asyncio.create_task(one(now))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.gather(*in_flight)


async def fleet_run(args: argparse.Namespace) -> None:
    fleet = Fleet(pin=False)
    server = await RedisServer(fleet.dir).start_async()
    try:
        upstream = fleet.upstream(2.0, 2, 0.0)
        replicas = []
        for i in range(3):
            port = free_port()
            text = replica_config(port, server.url, upstream.url, f"r{i + 1}", args)
            replicas.append(fleet.serve(f"replica-{i + 1}", text, port))
        print(f"3 replicas x {args.rate} requests/s for {args.minutes} min, one key limited "
              f"to {args.limit}/minute; logs in {fleet.dir}")  # fmt: skip
        results: list[tuple[float, int]] = []
        began = time.perf_counter()
        until = began + args.minutes * 60
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.gather(*(offer(session, r.url, args.key, args.rate, until, began,
                                         results) for r in replicas))  # fmt: skip
            batches = [await admin_view(session, r.url) for r in replicas]
        report(results, args)
        evalsha = commandstats(server, "evalsha")
        requests = len(results)
        admitted = sum(1 for _, status in results if status == 200)
        charges = sum(b["charge_batches"] for b in batches)
        print(f"Redis: {evalsha} EVALSHA for {requests} requests; the request path's round "
              f"trips: 1 per request (the admission; {requests} admissions); charges: "
              f"{admitted} in {charges} pipelines off the request path")  # fmt: skip
    finally:
        fleet.stop_all()
        server.kill()


async def admin_view(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/admin/clients",
                           headers={"Authorization": f"Bearer {ADMIN}"}) as reply:  # fmt: skip
        view: dict[str, Any] = await reply.json()
    return view


def commandstats(server: RedisServer, command: str) -> int:
    """How often Redis ran `command` (INFO commandstats, parsed by redis-py)."""
    info = server.call("INFO", "commandstats")
    return int(info.get(f"cmdstat_{command}", {}).get("calls", 0))


def report(results: list[tuple[float, int]], args: argparse.Namespace) -> None:
    statuses = Counter(status for _, status in results)
    minutes = int(args.minutes)
    served = [0] * minutes
    for sent_at, status in results:
        if status == 200 and int(sent_at // 60) < minutes:
            served[int(sent_at // 60)] += 1
    offered = len(results) / (args.minutes * 60)
    print(f"offered {offered:.0f} requests/s in total; answers: {dict(statuses)}")
    for i, count in enumerate(served):
        off = (count - args.limit) / args.limit * 100
        print(f"  minute {i + 1}: {count} served ({off:+.1f}% of {args.limit})")
    if served:
        print(f"  mean {statistics.mean(served):.1f} served per minute")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=("micro", "redis", "fleet"))
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--number", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rate", type=float, default=100.0, help="requests/s (per replica)")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--limit", type=int, default=120, help="the key's requests per minute")
    p.add_argument("--key", default="fleet-app-3b9d0f6c2e8a41d7b5c9")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    run = {"micro": micro, "redis": redis_store, "fleet": fleet_run}[args.what]
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
