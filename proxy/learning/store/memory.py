"""The embedded default store: per-pair windows and a decision log in this process's memory.

The windows are a `LocalWindows`, the same view the Redis store keeps while Redis is away,
so both stores age samples by one rule: trimmed by count and by age against the wall clock
whenever a pair's window changes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from proxy.core.domain import Pair, Sample
from proxy.learning.store.base import (
    BudgetLimits,
    BudgetUse,
    ClientAsk,
    ClientCharge,
    ClientLimits,
    ClientUse,
    ProbeSpend,
    StoreHealth,
    Window,
)
from proxy.learning.store.budget import LocalBudget
from proxy.learning.store.client_windows import ClientWindows
from proxy.learning.store.local_windows import LocalWindows
from proxy.settings.config import MemoryStoreConfig

LEASES_KEPT = 1000  # expired leases are swept when there are more than this
VALUES_KEPT = 10_000  # expired shared values, likewise


class MemoryStore:
    backend = "memory"

    def __init__(
        self, config: MemoryStoreConfig, budget_clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`budget_clock`: the probe budget's clock (a simulation gives its own)."""
        self._windows = LocalWindows(config.max_samples, config.max_age_s)
        self._decisions: deque[dict[str, Any]] = deque(maxlen=config.max_decisions)
        self._leases: dict[tuple[Pair, str], tuple[str, float]] = {}  # -> (holder, expiry)
        self._budget = LocalBudget(budget_clock)
        self._clients = ClientWindows()
        self._values: dict[str, tuple[bytes, float]] = {}  # name -> (value, expiry)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def append(self, samples: Sequence[Sample], decisions: Sequence[dict[str, Any]]) -> None:
        self._windows.add(samples)
        self._decisions.extend(decisions)

    async def changed_windows(self, known: Mapping[Pair, int]) -> dict[Pair, Window]:
        return self._windows.changed(known)

    async def recent_decisions(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        out = []
        for decision in reversed(self._decisions):
            if model is None or decision.get("model") == model:
                out.append(decision)
                if len(out) >= limit:
                    break
        return out

    async def try_lease(self, pair: Pair, slot: str, holder: str, ttl_s: float) -> str | None:
        now = time.monotonic()
        if len(self._leases) > LEASES_KEPT:
            self._leases = {k: v for k, v in self._leases.items() if v[1] > now}
        held = self._leases.get((pair, slot))
        if held is not None and held[1] > now:
            return held[0]
        self._leases[pair, slot] = (holder, now + ttl_s)
        return holder

    async def spend_budget(self, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        return self._budget.spend(spend, limits)

    async def refund_budget(self, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        return self._budget.refund(spend, limits)

    async def put_once(self, name: str, value: bytes, ttl_s: float | None) -> bytes:
        now = time.monotonic()
        if len(self._values) > VALUES_KEPT:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        held = self._values.get(name)
        if held is not None and held[1] > now:
            return held[0]
        self._values[name] = (value, now + ttl_s if ttl_s is not None else math.inf)
        return value

    async def get_value(self, name: str) -> bytes | None:
        held = self._values.get(name)
        return held[0] if held is not None and held[1] > time.monotonic() else None

    async def admit_client(
        self, ask: ClientAsk, limits: ClientLimits, charges: Sequence[ClientCharge] = ()
    ) -> ClientUse:
        now = time.time()
        for charge in charges:
            self._clients.charge(charge, now)
        return self._clients.admit(ask, limits, now)

    async def charge_clients(self, charges: Sequence[ClientCharge]) -> None:
        now = time.time()
        for charge in charges:
            self._clients.charge(charge, now)

    async def client_use(
        self, clients: Sequence[str], limits: ClientLimits, day: str, month: str
    ) -> dict[str, ClientUse]:
        now = time.time()
        return {name: self._clients.use(name, limits, day, month, now) for name in clients}

    def health(self) -> StoreHealth:
        return StoreHealth(self.backend, True, "in-memory (this process only)")
