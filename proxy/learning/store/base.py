"""The Store interface every implementation offers, and what it reports about itself.

A store keeps, per pair, a window of samples bounded by count and age, a version that
changes whenever the window does, a capped log of decisions, the probe leases (one per
pair and probe slot, so that replicas sharing the store send one probe, not one each) and
the probe budget's spends (so that replicas sharing the store spend one budget, not one
each), and each named client's use of its limits and budget (proxy.clients). The request
path calls a store for one thing only, a limited client's admission (`admit_client`, one
script on Redis); samples and decisions reach it through `store.buffer.SampleBuffer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

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


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """One client's caps as the store checks them (None: no cap). The rate limits count over
    a sliding `window_s`; the budgets are USD per UTC day and month. Every replica must pass
    the same limits for a client."""

    requests: int | None = None
    tokens: int | None = None
    concurrent: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    window_s: float = 60.0
    hold_s: float = 900.0  # a concurrency slot not freed by then (a replica died) frees itself


class ClientAsk(NamedTuple):
    """One request's claim on its client's limits. `request_id` is unique per request (the
    charge names it again); `tokens` the estimate counted until the answer's own; `day` and
    `month` name the UTC periods the spend is counted in ("20250131", "202501")."""

    client: str
    request_id: str
    tokens: int
    day: str
    month: str


class ClientCharge(NamedTuple):
    """What one finished request used: its tokens (the answer's, else the estimate), its
    cost in USD (hedges and failover attempts included), and it frees its concurrency slot.
    Counted once per `request_id` (a re-sent batch changes nothing)."""

    client: str
    request_id: str
    tokens: int
    cost_usd: float
    day: str
    month: str


# ClientUse.refusal values, in the order they are checked
REFUSALS = ("day", "month", "concurrent", "requests", "too_large", "tokens")


class ClientUse(NamedTuple):
    """A client's use of its limits, every replica's (after an admission, or read for the
    admin API). `refusal`: why an admission was refused (one of REFUSALS), None when granted
    or not asked. `retry_after_s`: when a refused request would fit (None: unknown).
    `reset_s`: until the window holds nothing (OpenAI's x-ratelimit-reset-*). The day's and
    month's figures are of the periods asked about; `refused_day` counts refusals today.
    A NamedTuple: one is made per admission, and a frozen dataclass of 16 fields costs
    several times more to make."""

    granted: bool
    refusal: str | None
    requests: int
    tokens: int
    concurrent: int
    usd_day: float
    usd_month: float
    retry_after_s: float | None = None
    reset_s: float = 0.0
    requests_day: int = 0
    tokens_day: int = 0
    refused_day: int = 0
    requests_month: int = 0
    tokens_month: int = 0
    last_seen: float | None = None  # wall clock of its last request (admission or charge)


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

    async def admit_client(
        self, ask: ClientAsk, limits: ClientLimits, charges: Sequence[ClientCharge] = ()
    ) -> ClientUse:
        """Count `ask` against its client's limits if it fits every one, atomically across
        replicas (one script on Redis); a refused ask counts nothing but the refusal.
        `charges` (as for charge_clients) are counted first, in the same round trip. Raises
        StoreUnavailable: the caller then applies its own share of the limits (and keeps
        the charges: counting them again changes nothing)."""
        ...

    async def charge_clients(self, charges: Sequence[ClientCharge]) -> None:
        """Count finished requests: tokens corrected, concurrency slots freed, the day's and
        month's use and spend. Raises StoreUnavailable (the caller keeps the batch)."""
        ...

    async def client_use(
        self, clients: Sequence[str], limits: ClientLimits, day: str, month: str
    ) -> dict[str, ClientUse]:
        """Each client's use now, changing nothing (the admin API). Raises StoreUnavailable."""
        ...

    def health(self) -> StoreHealth: ...
