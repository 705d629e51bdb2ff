"""One probe budget for the fleet: three replicas' probers on one real Redis spend one budget
(not three), and with the store unreachable each spends its share, budget /
expected_replicas, and says so. The ticks run on a synthetic clock the test advances a second
at a time, waiting for every probe in flight (tests/e2e/test_prober_slots.py): counts, not
timings. The budget's window is a real hour (time_scale 1): nothing leaves it meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp

from proxy.api.context import Services
from proxy.api.health import ProberCollector
from proxy.app import build_services
from proxy.probing.status import prober_status
from proxy.settings.config import Config
from proxy.settings.policy import ModelPolicy, PolicyHolder, PolicySet
from proxy.simulator import Market
from tests.e2e.test_prober_slots import MODELS, START, market, sent
from tests.helpers import free_port


def config(sim: Market, replica: str, store: dict[str, Any], prober: dict[str, Any]) -> Config:
    return Config.model_validate({
        "server": {"replica_id": replica},
        "auth": {"allow_unauthenticated": True},
        "providers": sim.provider_configs(),
        "models": {model: {"providers": ids} for model, ids in MODELS.items()},
        "store": store,
        "prober": prober,
    })  # fmt: skip


@asynccontextmanager
async def fleet(
    sim: Market, store: dict[str, Any], prober: dict[str, Any]
) -> AsyncIterator[list[Services]]:
    """Three replicas' services (no HTTP surface, no background loops), one store."""
    # bursts every 2 s for 20 samples: 4 pairs want far more probes than the cap
    policy = ModelPolicy.model_validate({"probe": {"burst_spacing_s": 2.0}})
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        built = []
        for i in range(3):
            holder = PolicyHolder([], initial=PolicySet(default=policy))
            svc = build_services(config(sim, f"r{i}", store, prober), holder, session)
            await svc.store.start()
            stack.push_async_callback(svc.store.close)
            built.append(svc)
        yield built


async def run(replicas: list[Services], seconds: int) -> None:
    """Every replica prepares and ticks at each synthetic second; probes are waited for."""
    now = START
    for _ in range(seconds):
        for svc in replicas:
            await svc.prober.prepare()
            svc.prober.tick(now)
        tasks = [t for svc in replicas for t in svc.prober.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        now += 1.0


def metric(svc: Services, name: str) -> float:
    for family in ProberCollector(svc.prober).collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not collected")


async def test_three_replicas_on_one_redis_spend_one_budget() -> None:
    store = {"kind": "redis", "url": "redis://127.0.0.1:6379/0",
             "prefix": f"test-fleet-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    async with market() as sim, fleet(sim, store, {"max_probes_per_hour": 10}) as replicas:
        await run(replicas, 40)  # 4 pairs x 20 burst slots due: 80 probes wanted
        assert sum(sent(sim).values()) == 10
        assert sum(s.probes for svc in replicas for s in svc.prober.states.values()) == 10
        for svc in replicas:
            await svc.prober.budget.read()
            budget = prober_status(svc.prober, START + 40)["budget"]
            assert budget["mode"] == "fleet" and budget["shared"]
            assert budget["used_probes"] == 10 and budget["max_probes"] == 10
            assert budget["frees_in_s"] is not None and budget["frees_in_s"] > 3000
            assert metric(svc, "ttft_router_probe_budget_shared") == 1.0
        paused = [svc.prober.paused_because for svc in replicas]
        assert any(p is not None and "probe cap reached: 10 of 10" in p for p in paused)


async def test_store_unreachable_each_replica_spends_its_share_and_says_so() -> None:
    store = {"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0",
             "connect_timeout_s": 0.2, "socket_timeout_s": 0.2}  # fmt: skip
    prober = {"max_probes_per_hour": 12, "expected_replicas": 3}
    async with market() as sim, fleet(sim, store, prober) as replicas:
        await run(replicas, 20)
        assert sum(sent(sim).values()) == 12
        for svc in replicas:
            assert sum(s.probes for s in svc.prober.states.values()) == 4  # 12 / 3 each
            status = prober_status(svc.prober, START + 20)
            budget = status["budget"]
            assert budget["mode"] == "local share" and not budget["shared"]
            assert "store unavailable" in budget["why"]
            assert budget["max_probes"] == 4 and budget["used_probes"] == 4
            assert budget["local_share"] == {"expected_replicas": 3, "max_probes": 4,
                                             "max_cost_usd": 0.05 / 3}  # fmt: skip
            assert budget["paused"] and "share of 3: store unavailable" in budget["paused_because"]
            assert not status["coordination"]["ok"]
            assert metric(svc, "ttft_router_probe_budget_shared") == 0.0
            assert metric(svc, "ttft_router_probe_budget_left") == 0.0  # probes left
