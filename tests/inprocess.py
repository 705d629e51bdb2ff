"""An in-process routing loop for claims about statistics: the real store, scoreboard,
scoring and routing component, fed by the simulator's engines (the same draws a simulated
provider makes) on a synthetic clock. No sockets, no wall clock, every random stream
seeded: the same seed gives the same requests, the same draws and the same choices.

A request is routed (`Routing.plan`), its TTFT drawn from the chosen pair's engine, its
sample stored and its attempt reported to routing like the recorder does; the scoreboard
refreshes every `refresh_s` of synthetic time, as its loop would.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.scoreboard import Scoreboard
from proxy.learning.store.memory import MemoryStore
from proxy.routing import AttemptEnded, AttemptStarted, FirstToken, RouteRequest, Routing
from proxy.settings.config import MemoryStoreConfig
from proxy.settings.policy import ModelPolicy, PolicyHolder, PolicySet
from proxy.settings.pricing import PairPrice
from proxy.simulator import ModelBehaviour, ModelEngine, derive_rng

# Synthetic wall-clock start: ahead of today, so the memory store (which ages samples out by
# the real clock) never drops one; only differences of synthetic times matter.
START = 1.9e9
MODEL = "m"


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


class NoPrices:
    def for_model(self, model: str) -> Mapping[str, PairPrice]:
        return {}


@dataclass
class Served:
    """What one request got: the provider, its TTFT, and when it arrived (synthetic)."""

    provider: str
    ttft_s: float
    at: float


@dataclass
class Loop:
    """One model's market and router. `behaviours`: provider -> how it serves the model
    (simulator ModelBehaviour fields, phases in market seconds from the start)."""

    behaviours: Mapping[str, Mapping[str, Any]]
    policy: ModelPolicy
    seed: int
    refresh_s: float = 1.0
    clock: Clock = field(default_factory=Clock)
    served: list[Served] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engines = {
            provider: ModelEngine(
                ModelBehaviour.model_validate(b), derive_rng(self.seed, provider, MODEL), 1.0,
                clock=self.clock,
            )
            for provider, b in self.behaviours.items()
        }  # fmt: skip
        self.store = MemoryStore(MemoryStoreConfig(max_samples=1000, max_age_s=86400))
        self.policies = PolicyHolder([], initial=PolicySet(default=self.policy))
        self.board = Scoreboard(
            self.store, self.policies, refresh_s=self.refresh_s,
            rng=random.Random(self.seed), clock=self.clock,
        )  # fmt: skip
        pairs = {MODEL: {provider: provider for provider in self.behaviours}}
        self.routing = Routing(
            self.policies, self.board, pairs, NoPrices(), rng=random.Random(self.seed + 1)
        )
        self._refreshed = float("-inf")

    async def request(self, gap_s: float, *, after_end: bool = False) -> Served:
        """One request `gap_s` after the last one arrived (`after_end`: after its first
        token, as a client that sends its requests one after the other)."""
        if after_end and self.served:
            last = self.served[-1]
            self.clock.now = max(self.clock.now, last.at + last.ttft_s)
        self.clock.now += gap_s
        if self.clock.now - self._refreshed >= self.refresh_s:
            await self.board.refresh()
            self._refreshed = self.clock.now
        now = self.clock.now
        plan = self.routing.plan(RouteRequest(MODEL, now))
        provider = plan.ranked[0].provider
        pair = Pair(MODEL, provider)
        self.routing.observe(AttemptStarted(pair, now=now))
        ttft = self._draw(provider)
        self.routing.observe(FirstToken(pair))
        sample = Sample(MODEL, provider, Outcome.OK, ttft, now, ttfb_s=ttft, total_s=ttft)
        await self.store.append([sample], [])
        self.routing.observe(AttemptEnded(pair, Outcome.OK, now))
        served = Served(provider, ttft, now)
        self.served.append(served)
        return served

    async def run(self, count: int, gap_s: float) -> list[Served]:
        """`count` requests, one every `gap_s` synthetic seconds."""
        return [await self.request(gap_s) for _ in range(count)]

    def _draw(self, provider: str) -> float:
        """The engine's TTFT for a request arriving now (its idle time counts for
        scale-to-zero; the request is in service only at its arrival: sequential traffic)."""
        engine = self.engines[provider]
        with engine.request():
            admission = engine.admit(engine.draw())
            engine.release()
        return admission.ttft_s

    def shares(self, last: int) -> Counter[str]:
        """Requests per provider among the last `last` requests."""
        return Counter(s.provider for s in self.served[-last:])
