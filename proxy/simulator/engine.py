"""Per-(provider, model) behaviour: what happens to each request, and the counters.

Owns the random draws (fault or none, cold or warm, TTFT), the warm/cold state of the model's
replica, the concurrency slots (an ``asyncio.Semaphore`` of ``max_concurrency``; waiting for a
slot is queueing delay that adds to TTFT), the market clock and request count that select the
active phase (``ModelBehaviour.phases``) and the counters ``/stats`` reports. Does no I/O and
never sleeps: the server waits the delays this module returns. Every request consumes the same
number of random variates in the same order, so a sequential run is reproducible from the seed
whatever the timing (and whatever the phases: a phase changes what the variates mean, never
how many are drawn).
"""

from __future__ import annotations

import asyncio
import enum
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from proxy.simulator.scenario import Behaviour, ModelBehaviour, Phase

Clock = Callable[[], float]


class Fault(enum.Enum):
    """An injected failure; the value is its key in ``/stats`` ``errors``."""

    ERROR_500 = "500"
    ERROR_429 = "429"
    HANG = "hang"
    DROP = "drop"
    REFUSED = "refused"


@dataclass(frozen=True)
class Draw:
    """The random part of one request, drawn on arrival. Times are scaled seconds.

    ``behaviour`` is the one in force on arrival (the active phase's, or the base) and
    ``phase`` that phase's label (None outside every phase); the request keeps both to its end.
    """

    fault: Fault | None
    is_cold_by_chance: bool
    warm_ttft_s: float
    cold_ttft_s: float
    behaviour: Behaviour
    phase: str | None = None


@dataclass(frozen=True)
class Admission:
    """One request's service, decided when it gets a slot. ``ttft_s`` is scaled seconds."""

    is_cold: bool
    ttft_s: float


@dataclass
class Counters:
    """Counters of one model (or of a whole provider, summed). Mutable: owned by one engine."""

    requests: int = 0
    cold_starts: int = 0
    aborted: int = 0
    completed: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {fault.value: 0 for fault in Fault})

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts to these."""
        self.requests += other.requests
        self.cold_starts += other.cold_starts
        self.aborted += other.aborted
        self.completed += other.completed
        for key, value in other.errors.items():
            self.errors[key] += value

    def to_dict(self) -> dict[str, Any]:
        """The counters as ``/stats`` shows them."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["errors"] = dict(self.errors)
        return data


def derive_rng(seed: int, provider: str, model: str) -> np.random.Generator:
    """A generator of its own for one (provider, model), stable across processes."""
    entropy = [seed, zlib.crc32(provider.encode()), zlib.crc32(model.encode())]
    return np.random.default_rng(np.random.SeedSequence(entropy))


class ModelEngine:
    """State and decisions of one (provider, model).

    Market time is unscaled seconds since the engine was made or its counters were reset;
    with the requests received since then it selects the active phase on each arrival.

    The replica starts warm. With ``scale_to_zero_after_s`` set, the model goes cold once no
    request has been in service for that long (scaled); the next request pays a cold start
    and the replica is warm from the end of that start, so requests that arrive during the
    load wait for what remains of it (they are not counted as cold starts). ``cold_chance``
    sends a request to a cold replica regardless of the warm state.
    """

    def __init__(
        self,
        behaviour: ModelBehaviour,
        rng: np.random.Generator,
        time_scale: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.behaviour = behaviour
        self.time_scale = time_scale
        self.counters = Counters()
        self._rng = rng
        self._clock = clock
        self._slots = asyncio.Semaphore(behaviour.max_concurrency)
        self._in_flight = 0
        self._in_service = 0
        self._idle_since = clock()
        self._warm_at = 0.0
        self._origin = clock()
        self._phases: tuple[tuple[Phase, str, Behaviour], ...] = tuple(
            (phase, label, merged)
            for phase, (label, merged) in zip(
                behaviour.phases, behaviour.phase_behaviours(), strict=True
            )
        )
        self._base = behaviour.base()

    @property
    def in_flight(self) -> int:
        """Requests being handled now: queued for a slot or in service."""
        return self._in_flight

    def market_time_s(self) -> float:
        """Unscaled seconds since the engine started or its counters were last reset."""
        return (self._clock() - self._origin) / self.time_scale

    def active(self, requests_before: int | None = None) -> tuple[str | None, Behaviour]:
        """The label of the phase in force and its behaviour, for a request arriving now.

        ``requests_before``: requests received before that one (default: all received so
        far, i.e. for the next arrival). Outside every phase: ``(None, base behaviour)``.
        """
        if not self._phases:
            return None, self._base
        received = self.counters.requests if requests_before is None else requests_before
        now_s = self.market_time_s()
        for phase, label, merged in reversed(self._phases):
            if phase.holds(now_s, received):
                return label, merged
        return None, self._base

    def prefill_s(self, draw: Draw, prompt_tokens: int) -> float:
        """Scaled seconds the prompt's prefill adds to TTFT (none without a prefill rate)."""
        rate = draw.behaviour.prefill_tokens_per_s
        return 0.0 if rate is None else prompt_tokens / rate * self.time_scale

    def token_interval_s(self, draw: Draw) -> float:
        """Scaled seconds between two output tokens after the first."""
        return self.time_scale / draw.behaviour.tokens_per_s

    def retry_after_s(self, draw: Draw) -> float:
        """Scaled seconds a 429 asks the client to wait."""
        return draw.behaviour.retry_after_s * self.time_scale

    def draw(self) -> Draw:
        """Draw the random part of the request just counted by ``request()``.

        Always consumes two uniforms and two normals, in the phase's behaviour or not.
        """
        phase, b = self.active(max(0, self.counters.requests - 1))
        u_fault, u_cold = self._rng.random(2)
        z_warm, z_cold = self._rng.standard_normal(2)
        warm = b.warm_ttft.median_s * float(np.exp(b.warm_ttft.sigma * z_warm))
        cold = b.cold_start.median_s * float(np.exp(b.cold_start.sigma * z_cold))
        return Draw(
            fault=Fault.REFUSED if b.refuse else self._fault(b, float(u_fault)),
            is_cold_by_chance=bool(u_cold < b.cold_chance),
            warm_ttft_s=warm * self.time_scale,
            cold_ttft_s=cold * self.time_scale,
            behaviour=b,
            phase=phase,
        )

    def _fault(self, b: Behaviour, u: float) -> Fault | None:
        edge = 0.0
        for fault, rate in (
            (Fault.ERROR_500, b.error_500_rate),
            (Fault.ERROR_429, b.error_429_rate),
            (Fault.HANG, b.hang_rate),
            (Fault.DROP, b.drop_midstream_rate),
        ):
            edge += rate
            if u < edge:
                return fault
        return None

    def admit(self, draw: Draw) -> Admission:
        """Decide cold or warm and the TTFT for a request that just got a slot."""
        now = self._clock()
        scale_to_zero = draw.behaviour.scale_to_zero_after_s
        is_idle_cold = (
            scale_to_zero is not None
            and self._in_service == 0
            and now >= self._warm_at
            and now - self._idle_since > scale_to_zero * self.time_scale
        )
        self._in_service += 1
        if is_idle_cold:
            self._warm_at = now + draw.cold_ttft_s
        if is_idle_cold or draw.is_cold_by_chance:
            self.counters.cold_starts += 1
            return Admission(is_cold=True, ttft_s=draw.cold_ttft_s)
        loading_left_s = max(0.0, self._warm_at - now)
        return Admission(is_cold=False, ttft_s=loading_left_s + draw.warm_ttft_s)

    def release(self) -> None:
        """Mark the end of an admitted request's service."""
        self._in_service -= 1
        if self._in_service == 0:
            self._idle_since = self._clock()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Count a request and keep it in flight for the duration of the block."""
        self.counters.requests += 1
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    @asynccontextmanager
    async def slot(self, draw: Draw) -> AsyncIterator[Admission]:
        """Wait for a free slot (queueing), admit the request, release it on exit."""
        async with self._slots:
            admission = self.admit(draw)
            try:
                yield admission
            finally:
                self.release()

    def record_fault(self, fault: Fault) -> None:
        """Count an injected fault."""
        self.counters.errors[fault.value] += 1

    def record_completed(self) -> None:
        """Count an answer delivered to the end."""
        self.counters.completed += 1

    def record_aborted(self) -> None:
        """Count a request whose client went away before the end."""
        self.counters.aborted += 1

    def reset_counters(self) -> None:
        """Zero the counters and restart market time (phases start over); the warm state, the
        random stream and the requests in flight are kept."""
        self.counters = Counters()
        self._origin = self._clock()
