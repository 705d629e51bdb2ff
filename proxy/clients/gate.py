"""The clients' gate: every /v1 request is admitted against its client's limits before it
is routed, and charged with what it used when it is over.

A client without limits or budget is admitted here without asking anyone. A limited one is
admitted by the store: one ADMIT_CLIENT script on Redis (the request's only round trip to
the store), in-process with the memory store. If Redis does not answer, the gate counts
locally (`ClientWindows`) at `auth.fallback_share` of every limit, and of the budget left at
the last answer, for LOCAL_FOR_S before asking Redis again: an outage never blocks traffic
(docs/clients.md, "When the store is unreachable"). Charges (tokens, cost, the freed
concurrency slot) are queued: the next admission's round trip carries them, else a
background task sends them in pipelined batches after CHARGE_DELAY_S, or at once when one
frees a concurrency slot (so the slot is free in the store as the answer's last bytes go
out); what Redis does not take stays queued (bounded) and is sent when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from proxy.clients.periods import Periods, day_ends_in_s, month_ends_in_s
from proxy.clients.refusals import refusal_error
from proxy.clients.registry import Client
from proxy.learning.store.base import (
    ClientAsk,
    ClientCharge,
    ClientLimits,
    ClientUse,
    Store,
    StoreUnavailable,
)
from proxy.learning.store.client_windows import ClientWindows
from proxy.telemetry.metrics import Metrics

log = logging.getLogger("ttft_router.clients")

ADMIT_DEADLINE_S = 1.0  # the longest a request waits for the store's answer about its limits
LOCAL_FOR_S = 1.0  # after the store failed to answer, count locally this long
MAX_QUEUED = 100_000  # charges waiting for the store; past it the oldest are dropped
BATCH = 500
CHARGE_DELAY_S = 0.02  # a charge waits this long for an admission to carry it (or more)


@dataclass(slots=True)
class Ticket:
    """One admitted request. `use`: the store's answer (None for a client without limits);
    `is_local`: admitted by this replica's own count (the store was unreachable)."""

    client: Client
    request_id: str
    tokens: int
    day: str
    month: str
    use: ClientUse | None = None
    is_local: bool = False
    is_charged: bool = False


@dataclass(slots=True)
class ClientStats:
    """One client's figures on this replica since it started (the admin API)."""

    requests: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    usd: float = 0.0
    last_seen: float | None = None


class Gate:
    def __init__(
        self, store: Store, metrics: Metrics, share: float,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._store = store
        self._metrics = metrics
        self._share = share
        self._clock = clock
        self._asks_store = store.backend != "memory"  # the memory store counts in-process
        self._periods = Periods()
        self._local = ClientWindows()
        self._local_until = 0.0  # monotonic: count locally until then
        self._spent: dict[str, tuple[float, float]] = {}  # client -> the store's day, month USD
        self._queued: deque[ClientCharge] = deque()
        self._wake = asyncio.Event()
        self._urgent = False  # a queued charge frees a concurrency slot: send it at once
        self.stats: dict[str, ClientStats] = {}
        self.dropped_charges = 0
        self.charge_batches = 0  # pipelines of charges sent to the store (one round trip each)
        self.carried_charges = 0  # charges sent along with an admission (no round trip)
        self.last_error: str | None = None

    @property
    def is_local(self) -> bool:
        """Limits are counted by this replica alone (the store's last answer did not come)."""
        return self._local_until > 0

    # -- admission ---------------------------------------------------------------------

    async def admit(self, client: Client, tokens: int) -> Ticket:
        """Admit one request of `client` that may use `tokens` (estimated). Raises
        ClientRateLimited or QuotaExceeded (429) when it is over a limit."""
        now = self._clock()
        day, month = self._periods.names(now)
        ticket = Ticket(client, f"{random.getrandbits(64):016x}", tokens, day, month)
        limits = client.limits
        if limits is None:
            self._admitted(client, now)
            return ticket
        ask = ClientAsk(client.name, ticket.request_id, tokens, day, month)
        use: ClientUse | None = None
        if not self._asks_store:
            use = await self._store.admit_client(ask, limits)
        elif time.monotonic() >= self._local_until:
            use = await self._ask_store(ask, limits)
        if use is None:
            ticket.is_local = True
            use = self._local.admit(ask, self._local_limits(client.name, limits), now)
        ticket.use = use
        if not use.granted:
            self._refused(client, use.refusal or "", now)
            resets_in = day_ends_in_s(now) if use.refusal == "day" else month_ends_in_s(now)
            raise refusal_error(client.name, limits, use, tokens, resets_in)
        self._admitted(client, now)
        return ticket

    async def _ask_store(self, ask: ClientAsk, limits: ClientLimits) -> ClientUse | None:
        """The store's admission, or None (then counted locally) when it does not answer.
        The charges queued meanwhile ride along in the same round trip."""
        carried = self._take(BATCH)
        try:
            async with asyncio.timeout(ADMIT_DEADLINE_S):
                use = await self._store.admit_client(ask, limits, carried)
            self.carried_charges += len(carried)
        except (StoreUnavailable, TimeoutError) as exc:
            self._queued.extendleft(reversed(carried))  # counted once however often sent
            if not self._local_until:  # a new outage: this replica's share, counted anew
                log.warning("client limits counted locally at %.0f%% for %.0f s: the store "
                            "did not answer (%s)", self._share * 100, LOCAL_FOR_S,
                            exc or "timed out")  # fmt: skip
                self._local = ClientWindows()
            self._local_until = time.monotonic() + LOCAL_FOR_S
            self._metrics.client_limits_local.set(1)
            return None
        if self._local_until:
            log.info("client limits counted by the store again")
            self._local_until = 0.0
            self._metrics.client_limits_local.set(0)
        self._spent[ask.client] = (use.usd_day, use.usd_month)
        return use

    def _local_limits(self, client: str, limits: ClientLimits) -> ClientLimits:
        """`limits` at this replica's share; a budget: its share of what was left when the
        store last answered."""
        share = self._share
        day, month = self._spent.get(client, (0.0, 0.0))

        def part(cap: int | None) -> int | None:
            return None if cap is None else max(1, math.floor(cap * share))

        def left(cap: float | None, spent: float) -> float | None:
            return None if cap is None else max(0.0, cap - spent) * share

        return replace(
            limits, requests=part(limits.requests), tokens=part(limits.tokens),
            concurrent=part(limits.concurrent), usd_per_day=left(limits.usd_per_day, day),
            usd_per_month=left(limits.usd_per_month, month),
        )  # fmt: skip

    def _admitted(self, client: Client, now: float) -> None:
        stats = self._stats(client.name)
        stats.requests += 1
        stats.last_seen = now
        self._metrics.count_client_request(client.name)

    def _refused(self, client: Client, reason: str, now: float) -> None:
        """Count a refusal of `client` (the gate's, or a permission's: model, control...)."""
        stats = self._stats(client.name)
        stats.refused[reason] += 1
        stats.last_seen = now
        self._metrics.count_client_refusal(client.name, reason)

    def refused(self, client: Client, reason: str) -> None:
        self._refused(client, reason, self._clock())

    def _stats(self, name: str) -> ClientStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = ClientStats()
        return stats

    # -- charges -----------------------------------------------------------------------

    async def charge(self, ticket: Ticket, tokens: int, cost_usd: float) -> None:
        """The request is over: it used `tokens` and cost `cost_usd` (hedges and failover
        attempts included). Frees its concurrency slot. Once per ticket."""
        if ticket.is_charged:
            return
        ticket.is_charged = True
        name = ticket.client.name
        charge = ClientCharge(name, ticket.request_id, tokens, cost_usd, ticket.day, ticket.month)
        stats = self._stats(name)
        stats.tokens += tokens
        stats.usd += cost_usd
        self._metrics.count_client_use(name, tokens, cost_usd)
        if ticket.is_local or self.is_local:
            self._local.charge(charge, self._clock())
        if not self._asks_store:
            await self._store.charge_clients([charge])  # in-process: never waits
            return
        if len(self._queued) >= MAX_QUEUED:
            self._queued.popleft()
            self.dropped_charges += 1
        self._queued.append(charge)
        limits = ticket.client.limits
        if limits is not None and limits.concurrent is not None:
            self._urgent = True  # its slot: free in the store before the client asks again
        self._wake.set()

    def _take(self, count: int) -> list[ClientCharge]:
        return [self._queued.popleft() for _ in range(min(count, len(self._queued)))]

    async def flush(self) -> None:
        """Send the queued charges. Raises StoreUnavailable (what was not sent stays)."""
        while self._queued:
            batch = self._take(BATCH)
            try:
                await self._store.charge_clients(batch)
            except StoreUnavailable:
                self._queued.extendleft(reversed(batch))
                raise
            self.charge_batches += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Send charges as they come until `stop` (the app's lifespan runs it)."""
        watcher = asyncio.create_task(self._wake_on(stop))
        backoff = 0.0
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                self._wake.clear()
                if backoff:
                    await asyncio.sleep(backoff)  # the store failed: not once per charge
                elif not self._urgent:  # the next admission may carry them, or more come
                    await asyncio.sleep(CHARGE_DELAY_S)
                self._urgent = False
                try:
                    await self.flush()
                except StoreUnavailable as exc:
                    if self.last_error is None:
                        log.warning("client charges kept for later: %s", exc)
                    self.last_error = str(exc)
                    backoff = min(max(backoff * 2, 0.1), 2.0)
                    self._wake.set()
                    continue
                if self.last_error is not None:
                    log.info("client charges sent again")
                self.last_error, backoff = None, 0.0
        finally:
            watcher.cancel()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def drain(self, timeout_s: float) -> None:
        """Shutdown: send what is queued within `timeout_s`, say what was not."""
        try:
            await asyncio.wait_for(self.flush(), timeout=timeout_s)
        except (TimeoutError, StoreUnavailable) as exc:
            log.error("shutdown: %d client charges not written to the store (%s)",
                      len(self._queued), exc or "timed out")  # fmt: skip

    @property
    def queued(self) -> int:
        return len(self._queued)

    def period_names(self, now: float) -> tuple[str, str]:
        return self._periods.names(now)
