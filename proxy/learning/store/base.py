"""The Store interface every implementation offers, and what it reports about itself.

A store keeps, per pair, a window of samples bounded by count and age, a version that
changes whenever the window does, a capped log of decisions, the probe leases (one per
pair and probe slot, so that replicas sharing the store send one probe, not one each) and
the probe budget's spends (so that replicas sharing the store spend one budget, not one
each). The request path never calls a store: samples and decisions reach it through
`store.buffer.SampleBuffer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.core.domain import Pair, Sample
from proxy.core.errors import TtftRouterError


class StoreUnavailable(TtftRouterError):
    """The backing service cannot be reached; callers keep their data and retry later."""


@dataclass(frozen=True, slots=True)
class StoreHealth:
    backend: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Window:
    """A pair's samples (oldest first) and the version they were read at."""

    version: int
    samples: list[Sample]


@dataclass(frozen=True, slots=True)
class ProbeSpend:
    """One probe's claim on the budget. `spend_id` is unique per probe (e.g. replica + a
    counter): calling again with the same id settles it (its cost becomes `cost_usd`) rather
    than counting it twice, so a retried call after a lost reply is safe."""

    spend_id: str
    model: str
    cost_usd: float


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Caps on the probes of every replica sharing the store, over the last `window_s`
    seconds (a sliding window: an hour, or the prober's hour at its time scale). A per-model
    cap of None is no cap. Every replica must pass the same limits."""

    window_s: float
    max_probes: int
    max_cost_usd: float
    max_probes_per_model: int | None = None
    max_cost_usd_per_model: float | None = None


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """The answer to a spend or refund, and the budget's use after it (all replicas).
    `refusal` names the cap that refused a spend ("probes", "cost", "model probes", "model
    cost"), None when granted; `frees_in_s` is when the oldest spend leaves the window
    (None: nothing spent)."""

    granted: bool
    refusal: str | None
    probes: int
    cost_usd: float
    model_probes: int
    model_cost_usd: float
    frees_in_s: float | None


class Store(Protocol):
    backend: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, samples: Sequence[Sample], decisions: Sequence[dict[str, Any]]) -> None:
        """Add samples to their pairs' windows and decisions to the log, atomically per
        pair. Raises StoreUnavailable when nothing could be written."""
        ...

    async def changed_windows(self, known: Mapping[Pair, int]) -> dict[Pair, Window]:
        """The windows whose version differs from `known` (pairs absent from `known` are
        all returned). Raises StoreUnavailable."""
        ...

    async def recent_decisions(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first. Raises StoreUnavailable."""
        ...

    async def try_lease(self, pair: Pair, slot: str, holder: str, ttl_s: float) -> str | None:
        """Take the lease of `pair`'s probe slot `slot` for `holder` for `ttl_s` seconds,
        unless another holder has it (Redis: SET NX PX). Returns who holds it now (`holder`
        when taken; None if it expired in between). Raises StoreUnavailable."""
        ...

    async def spend_budget(self, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        """Count `spend` against the fleet's budget if it fits every cap of `limits` (the
        overall probes and cost, and the model's), atomically across replicas: when N
        replicas call at once, at most the caps' worth are granted. A spend already counted
        (same id, still in the window) is settled instead: its cost becomes `cost_usd`, and
        it is never refused. A refused spend counts nothing. Raises StoreUnavailable: the
        caller then spends its own share (docs/redis.md, "Probe budget")."""
        ...

    async def refund_budget(self, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        """Uncount a spend whose probe was not sent (unknown ids change nothing); returns
        the use after it, for `spend.model`. Raises StoreUnavailable."""

    async def put_once(self, name: str, value: bytes, ttl_s: float | None) -> bytes:
        """Set the shared value `name` to `value` unless it has one (SET NX, expiring after
        `ttl_s`, None: never); returns the value it holds now. For the few values replicas
        share besides samples (the dashboard's session secret, its revoked sessions).
        Raises StoreUnavailable."""
        ...

    async def get_value(self, name: str) -> bytes | None:
        """The shared value `name`, None when unset or expired. Raises StoreUnavailable."""
        ...

    def health(self) -> StoreHealth: ...
