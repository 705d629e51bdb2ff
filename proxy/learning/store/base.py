"""The Store interface every implementation offers, and what it reports about itself.

A store keeps, per pair, a window of samples bounded by count and age, a version that
changes whenever the window does, a capped log of decisions, and the probe leases (one per
pair and probe slot, so that replicas sharing the store send one probe, not one each). The
request path never calls a store: samples and decisions reach it through
`store.buffer.SampleBuffer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.core.domain import Pair, Sample


class StoreUnavailable(Exception):
    """The backing service cannot be reached; callers keep their data and retry later."""


@dataclass(frozen=True, slots=True)
class StoreHealth:
    kind: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Window:
    """A pair's samples (oldest first) and the version they were read at."""

    version: int
    samples: list[Sample]


class Store(Protocol):
    kind: str

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
