"""Keeps this replica's view (a LocalWindows) in step with Redis, reading what changed only.

A pull is two round trips: the epoch, the change index since the last pull and a slice of
the version sweep; then the windows that moved, mostly their tails (docs/redis.md,
"Refresh"). This module holds that state (the versions read, the index cursor, the sweep's
queue) and builds the commands; it runs them through the `Execute` the store gives it, so it
imports no Redis client and translates no error: whatever `execute` raises propagates.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.core.domain import Pair
from proxy.learning.store.local_windows import LocalWindows
from proxy.learning.store.redis_commands import Commands
from proxy.learning.store.redis_schema import LATE_S, Command, unpack_pair, unpack_samples

log = logging.getLogger("ttft_router.store")

OVERLAP_MS = 1000.0  # re-read this much of the change index (server clock jitter)
READ_CHUNK = 256  # windows per pipeline on a full read

# Runs commands in one pipelined round trip (or one per node), results in order.
Execute = Callable[[Sequence[Command]], Awaitable[list[Any]]]


@dataclass(frozen=True, slots=True)
class _Remote:
    """What this replica last read of one pair: its Redis version and newest timestamp."""

    version: int  # -1: nothing trusted, read the whole window next time
    newest: float | None


class RemoteReader:
    def __init__(self, commands: Commands, view: LocalWindows, sweep_s: float, where: str):
        self._commands = commands
        self._view = view
        self._sweep_s = sweep_s
        self._where = where
        self._remote: dict[Pair, _Remote] = {}
        self._index_seen: dict[Pair, float] = {}
        self._cursor_ms: float | None = None
        self._epoch: bytes | None = None
        self._sweep_queue: list[str] = []
        self._sweep_round = 0
        self._whole_sweep = False
        self._last_pull = 0.0

    def resync(self) -> None:
        """After an outage or a failover: at the next pull read the whole change index and
        compare every known model's versions at once. A failover can lose the last writes
        acknowledged by the old primary (asynchronous replication), so versions and index
        entries this replica read may be gone; comparing them all finds the pairs to re-read
        in one pull rather than over a sweep period."""
        self._cursor_ms = None
        self._whole_sweep = True

    async def pull(self, execute: Execute) -> None:
        """Bring the view up to date with Redis in two round trips: the change index and a
        slice of the version sweep, then the windows that moved (mostly their tails)."""
        whole = self._cursor_ms is None
        models = self._sweep_slice()
        epoch, entries, hashes = await self._poll(execute, whole, models)
        stale: set[Pair] = set()
        if epoch != self._epoch:
            if self._remote:
                log.info("redis %s: the keyspace was emptied (FLUSHALL, restart or expiry): "
                         "re-reading every window", self._where)  # fmt: skip
            self._epoch = epoch
            self._remote = {pair: _Remote(-1, None) for pair in self._remote}
            self._index_seen.clear()
            self._cursor_ms = None  # a restarted Redis may keep another clock
            stale.update(self._remote)
            if not whole:
                _, entries, _ = await self._poll(execute, True, [])
        stale.update(self._changed_in_index(entries))
        stale.update(self._versions_moved(models, hashes))
        await self._read_windows(execute, stale)
        self._last_pull = time.monotonic()

    async def _poll(
        self, execute: Execute, whole: bool, models: list[str]
    ) -> tuple[bytes | None, list[tuple[bytes, float]], list[dict[bytes, bytes]]]:
        """The epoch, the change index (all of it, or since the cursor less an overlap),
        and the versions of `models`: one round trip."""
        since = None if whole or self._cursor_ms is None else self._cursor_ms - OVERLAP_MS
        epoch, flat, *hashes = await execute(self._commands.poll(since, models))
        return epoch, list(zip(flat[::2], map(float, flat[1::2]), strict=True)), hashes

    def _changed_in_index(self, entries: list[tuple[bytes, float]]) -> set[Pair]:
        changed = set()
        for member, score in entries:
            if self._cursor_ms is None or score > self._cursor_ms:
                self._cursor_ms = score
            pair = unpack_pair(member)
            if pair is not None and self._index_seen.get(pair) != score:
                self._index_seen[pair] = score
                changed.add(pair)
        return changed

    def _sweep_slice(self) -> list[str]:
        """The next models whose versions to compare, so that each known model is compared
        once per `sweep_s`, spread over the refreshes (no spike); all of them after resync().
        The sweep catches what the index may miss: a server clock stepping back, an index
        entry lost in a failover."""
        if self._whole_sweep:
            self._whole_sweep = False
            self._sweep_queue = []
            return sorted({pair.model for pair in self._remote})
        elapsed = time.monotonic() - self._last_pull
        if not self._sweep_queue:
            self._sweep_queue = sorted({pair.model for pair in self._remote}, reverse=True)
            self._sweep_round = len(self._sweep_queue)
        count = math.ceil(self._sweep_round * min(1.0, elapsed / self._sweep_s))
        return [self._sweep_queue.pop() for _ in range(min(count, len(self._sweep_queue)))]

    def _versions_moved(self, models: list[str], hashes: list[dict[bytes, bytes]]) -> set[Pair]:
        """Pairs of `models` whose Redis version differs from the one last read, or unknown."""
        held: dict[str, dict[str, int]] = {model: {} for model in models}
        for pair, remote in self._remote.items():
            if pair.model in held:
                held[pair.model][pair.provider] = remote.version
        moved = set()
        for model, fields in zip(models, hashes, strict=True):
            for provider in held[model].keys() | {field.decode() for field in fields}:
                if int(fields.get(provider.encode(), 0)) != held[model].get(provider):
                    moved.add(Pair(model, provider))
        return moved

    async def _read_windows(self, execute: Execute, pairs: set[Pair]) -> None:
        ordered = sorted(pairs)
        for start in range(0, len(ordered), READ_CHUNK):
            chunk = ordered[start : start + READ_CHUNK]
            asks = [self._ask(pair) for pair in chunk]
            replies = await execute([self._commands.read_window(*ask) for ask in asks])
            for (pair, _, bound), reply in zip(asks, replies, strict=True):
                self._apply(pair, bound, reply)

    def _ask(self, pair: Pair) -> tuple[Pair, int, float]:
        """(pair, version held, tail bound) to send to READ_WINDOW."""
        remote = self._remote.get(pair)
        if remote is None:
            return pair, -1, -math.inf
        bound = -math.inf if remote.newest is None else remote.newest - LATE_S
        return pair, remote.version, bound

    def _apply(self, pair: Pair, bound: float, reply: list[Any]) -> None:
        version, mode = int(reply[0]), int(reply[1])
        if mode == 0:
            return
        samples = unpack_samples(pair, reply[2])
        newest = samples[-1].timestamp if samples else None
        if mode == 1:
            self._view.replace(pair, samples)
        else:
            self._view.replace_tail(pair, bound, samples)
            before = self._remote[pair].newest
            if before is not None and (newest is None or before > newest):
                newest = before
        self._remote[pair] = _Remote(version, newest)
