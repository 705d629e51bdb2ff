"""The shared store: samples and decisions of every replica in Redis, read back by all.

Owns the Redis client (redis-py asyncio, hiredis parser) and is the one place where Redis
errors become StoreUnavailable. Writes leave as one pipeline per flush: a script per pair
(append, trim by age and count, bump the version), one for the change index, the decision
lists. A refresh reads the change index first and then only the windows that moved, and of
those mostly the tail, so it costs what changed, not how many pairs exist. Keys, scripts and
the codec live in redis_schema.py; the design is told in docs/redis.md.

While Redis is unreachable this store serves this replica's view (LocalWindows: the windows
last read plus the samples appended since), so routing keeps learning, and health() says
degraded; the connection pool reconnects by itself. No call waits on Redis for longer than
the configured timeouts, and the request path never calls this module at all.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.core.domain import Pair, Sample
from proxy.learning.store.base import StoreHealth, StoreUnavailable, Window
from proxy.learning.store.local_windows import LocalWindows
from proxy.learning.store.redis_schema import (
    APPEND_SAMPLES,
    LATE_S,
    READ_WINDOW,
    SCRIPTS,
    TOUCH_INDEX,
    changes_key,
    decisions_key,
    epoch_key,
    late_key,
    lease_key,
    model_decisions_key,
    pack_pair,
    pack_sample,
    shared_key,
    unpack_pair,
    unpack_samples,
    versions_key,
    window_key,
)
from proxy.settings.config import RedisStoreConfig

log = logging.getLogger("ttft_router.store")

OVERLAP_MS = 1000.0  # re-read this much of the change index (server clock jitter)
READ_CHUNK = 256  # windows per pipeline on a full read

# One command as redis-py's `execute_command` takes it: plain data, so it can be re-sent.
Command = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Remote:
    """What this replica last read of one pair: its Redis version and newest timestamp."""

    version: int  # -1: nothing trusted, read the whole window next time
    newest: float | None


class RedisStore:
    kind = "redis"

    def __init__(self, config: RedisStoreConfig, replica: str) -> None:
        self._config = config
        self._prefix = config.prefix
        self._where = redacted(config.url.get_secret_value())
        self._ttl_s = max(1, math.ceil(config.max_age_s))
        self._replica = replica
        self._client: Redis | None = None
        self._view = LocalWindows(config.max_samples, config.max_age_s)
        self._remote: dict[Pair, _Remote] = {}
        self._index_seen: dict[Pair, float] = {}
        self._cursor_ms: float | None = None
        self._epoch: bytes | None = None
        self._sweep_queue: list[str] = []
        self._sweep_round = 0
        self._last_pull = 0.0
        self._health = StoreHealth(self.kind, False, f"redis {self._where}: not started")
        self._reported_down = False

    async def start(self) -> None:
        """Build the pool and try Redis once; never raises (an outage at start is served)."""
        pool = BlockingConnectionPool.from_url(
            self._config.url.get_secret_value(),
            max_connections=self._config.pool_size,
            timeout=self._config.connect_timeout_s,
            socket_timeout=self._config.socket_timeout_s,
            socket_connect_timeout=self._config.connect_timeout_s,
            retry=Retry(NoBackoff(), 1),  # one retry: a pooled socket may predate a restart
            protocol=2,  # RESP2: any Redis >= 2.6 and proxies without HELLO; reply shapes fixed
        )
        self._client = Redis.from_pool(pool)
        try:
            async with self._translated("connect") as client:
                await client.ping()
        except StoreUnavailable as exc:
            self._report_outage(exc)  # served regardless; health() says degraded
        else:
            self._up()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except (RedisError, OSError) as exc:
                log.warning("redis %s: error while closing: %s", self._where, exc)

    def health(self) -> StoreHealth:
        return self._health

    async def append(self, samples: Sequence[Sample], decisions: Sequence[dict[str, Any]]) -> None:
        self._view.add(samples)  # first, so routing learns from them even if Redis is down
        if not samples and not decisions:
            return
        commands = self._write_commands(samples, decisions)
        async with self._translated("append") as client:
            await self._execute(client, commands)
        self._up()

    async def changed_windows(self, known: Mapping[Pair, int]) -> dict[Pair, Window]:
        """Never raises: while Redis is unreachable the windows are this replica's view."""
        try:
            async with self._translated("read windows") as client:
                await self._pull(client)
        except StoreUnavailable as exc:
            self._report_outage(exc)  # routing goes on with this replica's view
        else:
            self._up()
        return self._view.changed(known)

    async def recent_decisions(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        key = (
            decisions_key(self._prefix)
            if model is None
            else model_decisions_key(self._prefix, model)
        )
        async with self._translated("read decisions") as client:
            rows = await client.lrange(key, 0, limit - 1)
        self._up()
        return [orjson.loads(row) for row in rows]

    async def try_lease(self, pair: Pair, slot: str, holder: str, ttl_s: float) -> str | None:
        """SET NX PX and a GET of the holder, in one round trip (no script: one key)."""
        key = lease_key(self._prefix, pair, slot)
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        async with self._translated("probe lease") as client:
            _, held = await self._execute(
                client, [("SET", key, holder, "NX", "PX", ttl_ms), ("GET", key)]
            )
        self._up()
        return None if held is None else bytes(held).decode()

    async def put_once(self, name: str, value: bytes, ttl_s: float | None) -> bytes:
        """SET NX (PX) and a GET, in one round trip."""
        key = shared_key(self._prefix, name)
        expiry = ("PX", max(1, math.ceil(ttl_s * 1000))) if ttl_s is not None else ()
        async with self._translated("shared value") as client:
            _, held = await self._execute(client, [("SET", key, value, "NX", *expiry),
                                                   ("GET", key)])  # fmt: skip
        return value if held is None else bytes(held)

    async def get_value(self, name: str) -> bytes | None:
        async with self._translated("shared value") as client:
            (held,) = await self._execute(client, [("GET", shared_key(self._prefix, name))])
        return None if held is None else bytes(held)

    # Writing

    def _write_commands(
        self, samples: Sequence[Sample], decisions: Sequence[dict[str, Any]]
    ) -> list[Command]:
        by_pair: dict[Pair, list[Sample]] = {}
        for sample in samples:
            by_pair.setdefault(sample.pair, []).append(sample)
        cutoff = time.time() - self._config.max_age_s
        commands = [self._append_command(pair, batch, cutoff) for pair, batch in by_pair.items()]
        commands += self._decision_commands(decisions)
        if by_pair:
            keys = (changes_key(self._prefix), epoch_key(self._prefix))
            packed = [pack_pair(pair) for pair in by_pair]
            # A fresh token each time: after a FLUSHALL or a restart, the first write names
            # a new epoch even if this replica wrote the last one.
            token = f"{self._replica}-{secrets.token_hex(8)}"
            commands.append(("EVALSHA", TOUCH_INDEX.sha, 2, *keys, token, self._ttl_s, *packed))
        return commands

    def _append_command(self, pair: Pair, batch: list[Sample], cutoff: float) -> Command:
        keys = (
            window_key(self._prefix, pair),
            versions_key(self._prefix, pair.model),
            late_key(self._prefix, pair.model),
        )
        members = b"\n".join(pack_sample(sample) for sample in batch)
        oldest = min(sample.timestamp for sample in batch)
        return ("EVALSHA", APPEND_SAMPLES.sha, 3, *keys, pair.provider, self._config.max_samples,
                cutoff, self._ttl_s, LATE_S, oldest, members)  # fmt: skip

    def _decision_commands(self, decisions: Sequence[dict[str, Any]]) -> list[Command]:
        if not decisions:
            return []
        by_model: dict[str, list[bytes]] = {}
        packed = []
        for decision in decisions:
            row = orjson.dumps(decision)
            packed.append(row)
            by_model.setdefault(str(decision.get("model", "")), []).append(row)
        commands = _capped_list(decisions_key(self._prefix), packed,
                                self._config.max_decisions, self._ttl_s)  # fmt: skip
        for model, rows in by_model.items():
            key = model_decisions_key(self._prefix, model)
            commands += _capped_list(key, rows, self._config.max_decisions_per_model, self._ttl_s)
        return commands

    # Reading

    async def _pull(self, client: Redis) -> None:
        """Bring the view up to date with Redis in two round trips: the change index and a
        slice of the version sweep, then the windows that moved (mostly their tails)."""
        whole = self._cursor_ms is None
        models = self._sweep_slice()
        epoch, entries, hashes = await self._poll(client, whole, models)
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
                _, entries, _ = await self._poll(client, True, [])
        stale.update(self._changed_in_index(entries))
        stale.update(self._versions_moved(models, hashes))
        await self._read_windows(client, stale)
        self._last_pull = time.monotonic()

    async def _poll(
        self, client: Redis, whole: bool, models: list[str]
    ) -> tuple[bytes | None, list[tuple[bytes, float]], list[dict[bytes, bytes]]]:
        """The epoch, the change index (all of it, or since the cursor less an overlap),
        and the versions of `models`: one round trip."""
        since: Any = "-inf" if whole or self._cursor_ms is None else self._cursor_ms - OVERLAP_MS
        epoch, flat, *hashes = await self._execute(client, [
            ("GET", epoch_key(self._prefix)),
            ("ZRANGEBYSCORE", changes_key(self._prefix), since, "+inf", "WITHSCORES"),
            *[("HGETALL", versions_key(self._prefix, model)) for model in models],
        ])  # fmt: skip
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
        once per `sweep_s`, spread over the refreshes (no spike). The sweep catches what the
        index may miss: a server clock stepping back, writes reordered across Cluster slots."""
        elapsed = time.monotonic() - self._last_pull
        if not self._sweep_queue:
            self._sweep_queue = sorted({pair.model for pair in self._remote}, reverse=True)
            self._sweep_round = len(self._sweep_queue)
        count = math.ceil(self._sweep_round * min(1.0, elapsed / self._config.sweep_s))
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

    async def _read_windows(self, client: Redis, pairs: set[Pair]) -> None:
        ordered = sorted(pairs)
        for start in range(0, len(ordered), READ_CHUNK):
            chunk = ordered[start : start + READ_CHUNK]
            asks = [self._ask(pair) for pair in chunk]
            replies = await self._execute(client, [self._read_command(*ask) for ask in asks])
            for (pair, _, bound), reply in zip(asks, replies, strict=True):
                self._apply(pair, bound, reply)

    def _ask(self, pair: Pair) -> tuple[Pair, int, float]:
        """(pair, version held, tail bound) to send to READ_WINDOW."""
        remote = self._remote.get(pair)
        if remote is None:
            return pair, -1, -math.inf
        bound = -math.inf if remote.newest is None else remote.newest - LATE_S
        return pair, remote.version, bound

    def _read_command(self, pair: Pair, known: int, bound: float) -> Command:
        keys = (
            window_key(self._prefix, pair),
            versions_key(self._prefix, pair.model),
            late_key(self._prefix, pair.model),
        )
        return ("EVALSHA", READ_WINDOW.sha, 3, *keys, pair.provider, known, bound)

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

    # The one boundary where Redis errors are translated

    async def _execute(self, client: Redis, commands: Sequence[Command]) -> list[Any]:
        """One pipelined round trip; scripts Redis has forgotten are loaded and re-sent."""
        results = await _pipeline(client, commands)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            for script in SCRIPTS:
                await client.script_load(script.text)
            again = await _pipeline(client, [commands[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    @contextlib.asynccontextmanager
    async def _translated(self, doing: str) -> AsyncIterator[Redis]:
        if self._client is None:
            raise self._down(doing, "the store is not started")
        try:
            yield self._client
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._down(doing, f"{_reason(exc)}: {exc}") from exc

    def _down(self, doing: str, why: str) -> StoreUnavailable:
        """Health says degraded; the caller handles (the buffer keeps its batch) or logs."""
        detail = (
            f"redis {self._where} unavailable ({doing}: {why}); "
            "routing on the windows last read plus this replica's own samples"
        )
        self._health = StoreHealth(self.kind, False, detail)
        return StoreUnavailable(detail)

    def _report_outage(self, exc: StoreUnavailable) -> None:
        """One warning per outage, from the paths that handle it here (start, refresh)."""
        if not self._reported_down:
            log.warning("%s", exc)
            self._reported_down = True

    def _up(self) -> None:
        if self._reported_down:
            log.info("redis %s reachable again", self._where)
            self._reported_down = False
        if not self._health.ok:
            self._health = StoreHealth(self.kind, True, f"redis {self._where}, "
                                       f"prefix {self._prefix!r}")  # fmt: skip


async def _pipeline(client: Redis, commands: Sequence[Command]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))


def _capped_list(key: str, rows: list[bytes], cap: int, ttl_s: int) -> list[Command]:
    """LPUSH (oldest first in, so the newest ends up at the head), LTRIM to `cap`, EXPIRE."""
    return [("LPUSH", key, *rows), ("LTRIM", key, 0, cap - 1), ("EXPIRE", key, ttl_s)]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BusyLoadingError):
        return "Redis is loading its dataset"
    if isinstance(exc, RedisConnectionError | OSError):
        return "unreachable"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, ResponseError):
        return "command refused"
    return type(exc).__name__


def redacted(url: str) -> str:
    """The URL without user or password: safe for logs, health and the admin API."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
