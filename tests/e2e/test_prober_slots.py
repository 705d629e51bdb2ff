"""Probe slots, one by one: three replicas' probers share one real Redis (leases) and probe
real simulated providers, but their ticks run on a synthetic clock the test advances a
second at a time, waiting for every probe in flight before the next step. So each slot of
each pair can be checked to have been probed exactly once across the replicas, on every
machine, however loaded: no count of requests in a wall-clock window."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp

from proxy.api.context import Services
from proxy.app import build_services
from proxy.core.domain import Pair
from proxy.probing.schedule import slot_due
from proxy.settings.config import Config
from proxy.settings.policy import ModelPolicy, PolicyHolder, PolicySet
from proxy.simulator import Market
from tests.e2e.conftest import scenario

FAST = {"warm_ttft": {"median_s": 0.02, "sigma": 0.1}, "tokens_per_s": 5000}
MODELS = {"model-x": {"alpha": "x-a", "beta": "x-b"}, "model-y": {"alpha": "y-a", "beta": "y-b"}}
SPACING_S = 10.0  # a burst slot's period (synthetic seconds; also its lease's time to live)
JITTER = 0.2
START = 1_000_000_000.0  # synthetic wall clock of the first tick


def market() -> Market:
    return Market(scenario({
        "alpha": {"x-a": FAST, "y-a": FAST},
        "beta": {"x-b": FAST, "y-b": FAST},
    }, time_scale=1.0))  # fmt: skip


def pairs() -> list[tuple[Pair, str]]:
    return [(Pair(m, p), u) for m, ids in MODELS.items() for p, u in ids.items()]


def config(sim: Market, replica: str, prefix: str) -> Config:
    return Config.model_validate({
        "server": {"replica_id": replica},
        "auth": {"allow_unauthenticated": True},
        "providers": sim.provider_configs(),
        "models": {model: {"providers": ids} for model, ids in MODELS.items()},
        "store": {"kind": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": prefix},
    })  # fmt: skip


@asynccontextmanager
async def replicas(sim: Market, count: int) -> AsyncIterator[list[Services]]:
    """`count` replicas' services (no HTTP surface, no background loops), one Redis prefix."""
    policy = ModelPolicy.model_validate({"probe": {"burst_spacing_s": SPACING_S, "jitter": JITTER}})
    prefix = f"test-slots-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        built = []
        for i in range(count):
            holder = PolicyHolder([], initial=PolicySet(default=policy))
            svc = build_services(config(sim, f"r{i}", prefix), holder, session)
            await svc.store.start()
            stack.push_async_callback(svc.store.close)
            built.append(svc)
        yield built


def due_slots(pair: Pair, until: float) -> int:
    """Burst slots of `pair` due in [the slot of START, until]: one probe each, in total
    (before any sample a pair is both bursting and wanted by routing: one slot serves both)."""
    first = math.floor(START / SPACING_S)
    last = math.floor(until / SPACING_S)
    dues = (slot_due(pair, "b", SPACING_S, JITTER, k) for k in range(first, last + 1))
    return sum(1 for due in dues if due <= until)


async def step(fleet: list[Services], now: float) -> None:
    """Every live replica ticks at `now`; then every probe it started is waited for."""
    for svc in fleet:
        svc.prober.tick(now)
    tasks = [t for svc in fleet for t in svc.prober.tasks]
    if tasks:
        await asyncio.wait(tasks, timeout=30)


def sent(sim: Market) -> dict[Pair, int]:
    return {pair: sim.stats(pair.provider)["models"][u]["requests"] for pair, u in pairs()}


async def test_three_replicas_probe_each_slot_once_even_when_one_stops() -> None:
    async with market() as sim, replicas(sim, 3) as fleet:
        now = START
        for _ in range(60):  # six slots per pair
            await step(fleet, now)
            counts = sent(sim)
            for pair, _ in pairs():
                assert counts[pair] == due_slots(pair, now), (pair, now - START, counts)
            now += 1.0
        for _ in range(40):  # one replica stops ticking: the others keep every slot, once
            await step(fleet[1:], now)
            counts = sent(sim)
            for pair, _ in pairs():
                assert counts[pair] == due_slots(pair, now), (pair, now - START, counts)
            now += 1.0
