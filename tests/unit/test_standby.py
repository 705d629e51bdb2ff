"""Warm standby: while a model has traffic, the pair next in line for failover is probed
before its idle-to-cold time; once the model goes unused, it is not. The real app's
services (store, scoreboard, routing, prober) with samples put into the store and the
prober's plan read at synthetic times: nothing is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from proxy.api.context import Services
from proxy.app import build_services
from proxy.core.domain import Outcome, Pair, Sample, Source
from proxy.probing.schedule import Reason
from proxy.routing import RouteRequest
from proxy.settings.config import Config
from proxy.settings.policy import ModelPolicy, PolicyHolder, PolicySet

PAIRS = {"a": "m-a", "b": "m-b", "c": "m-c"}
START = 1.9e9  # synthetic wall clock: ahead of today, as tests/inprocess.py's


def config() -> Config:
    return Config.model_validate({
        "auth": {"allow_unauthenticated": True},
        "providers": {p: {"kind": "openai", "base_url": f"http://127.0.0.1:9/{p}"}
                      for p in PAIRS},
        "models": {"m": {"providers": PAIRS}},
        "prober": {"max_probes_per_hour": 0},  # plans only: nothing may be sent
    })  # fmt: skip


@asynccontextmanager
async def services() -> AsyncIterator[Services]:
    policy = ModelPolicy.model_validate({"probe": {"keep_warm": {"idle_to_cold_s": 120}}})
    async with aiohttp.ClientSession() as session:
        svc = build_services(config(), PolicyHolder([], PolicySet(default=policy)), session)
        await svc.store.start()
        try:
            yield svc
        finally:
            await svc.store.close()


def samples(provider: str, median: float, count: int, end: float, source: Source) -> list[Sample]:
    """`count` samples 10 s apart ending at `end`, each taking 0.5 s."""
    return [
        Sample("m", provider, Outcome.OK, median * (1 + 0.01 * (i % 5)), end - 10 * (count - i),
               total_s=0.5, source=source)
        for i in range(count)
    ]  # fmt: skip


async def test_the_next_in_line_is_kept_warm_while_the_model_has_traffic() -> None:
    async with services() as svc:
        now = START
        await svc.store.append(
            samples("a", 0.3, 40, now, Source.PASSIVE)  # the chosen pair: client traffic
            + samples("b", 0.5, 20, now - 50, Source.PROBE)  # next in line, last seen 50 s ago
            + samples("c", 0.9, 20, now - 50, Source.PROBE),
            [],
        )
        await svc.scoreboard.refresh()
        svc.routing.plan(RouteRequest("m", now))  # a leads: the incumbent
        assert svc.routing.evidence("m", now).standby == ("b",)
        standby = svc.prober.plan_of(Pair("m", "b"), now)
        assert standby.reason is Reason.STANDBY
        # probed once idle for half the assumed idle-to-cold time (120 s x 0.5), from its
        # last probe's end (59.5 s ago): due in 0.5 s, well before it would go cold
        assert standby.due is not None and abs(standby.due - (now + 0.5)) < 1e-6, standby
        assert svc.prober.plan_of(Pair("m", "c"), now).reason is not Reason.STANDBY


async def test_the_standby_is_not_probed_once_the_model_goes_unused() -> None:
    async with services() as svc:
        now = START
        quiet = now - 700  # the last client request: beyond standby.traffic_s (600 s)
        await svc.store.append(
            samples("a", 0.3, 40, quiet, Source.PASSIVE)
            + samples("b", 0.5, 20, now - 50, Source.PROBE)
            + samples("c", 0.9, 20, now - 50, Source.PROBE),
            [],
        )
        await svc.scoreboard.refresh()
        svc.routing.plan(RouteRequest("m", now))
        assert svc.routing.evidence("m", now).standby == ("b",)
        assert svc.prober.plan_of(Pair("m", "b"), now).reason is not Reason.STANDBY
