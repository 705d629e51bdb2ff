"""The shared store: samples and decisions of every replica in Redis, read back by all.

Owns the Redis client (redis-py asyncio, hiredis parser) for the three deployments `store.url`
can name (one endpoint, a Cluster, a Sentinel-managed primary), and is the one place where
Redis errors become StoreUnavailable. Writes leave as one pipeline per flush (a script per
pair, the decision lists, then the change index; on a Cluster the index only once the
windows are acknowledged). Reads are redis_reader.py's; the commands, redis_commands.py's;
keys and scripts, redis_schema.py's; the design is told in docs/redis.md.

While Redis is unreachable this store serves this replica's view (LocalWindows: the windows
last read plus the samples appended since), so routing keeps learning, and health() says
degraded; the client reconnects by itself, follows MOVED/ASK and finds a new primary after
a failover. No call waits on Redis for much longer than the configured timeouts, and the
request path never calls this module at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.core.domain import Pair, Sample
from proxy.learning.store import redis_commands
from proxy.learning.store.base import (
    BudgetLimits,
    BudgetUse,
    ClientAsk,
    ClientCharge,
    ClientLimits,
    ClientUse,
    ProbeSpend,
    StoreHealth,
    StoreUnavailable,
    Window,
)
from proxy.learning.store.local_windows import LocalWindows
from proxy.learning.store.redis_commands import Commands, budget_use
from proxy.learning.store.redis_reader import RemoteReader
from proxy.learning.store.redis_schema import SCRIPTS, Command, shared_key
from proxy.settings.config import RedisStoreConfig
from proxy.settings.redis_url import RedisTarget

log = logging.getLogger("ttft_router.store")

Client = Redis | RedisCluster


class RedisStore:
    backend = "redis"

    def __init__(self, config: RedisStoreConfig, replica: str) -> None:
        self._config = config
        self._target = config.target
        self._where = self._target.redacted(config.url.get_secret_value())
        self._prefix = config.prefix
        self._commands = Commands(config, replica)
        self._view = LocalWindows(config.max_samples, config.max_age_s)
        self._reader = RemoteReader(self._commands, self._view, config.sweep_s, self._where)
        self._client: Client | None = None
        self._sentinel: Sentinel | None = None
        # Every operation holds one of these: a Cluster or Sentinel pool refuses a connection
        # past its size instead of waiting, so the store waits here (at most connect_timeout_s).
        self._slots = asyncio.Semaphore(config.pool_size)
        self._topology: object = None
        self._health = StoreHealth(self.backend, False, f"redis {self._where}: not started")
        self._reported_down = False

    async def start(self) -> None:
        """Build the client and try Redis once; never raises (an outage at start is served)."""
        self._client, self._sentinel = connect(self._config, self._target)
        try:
            async with self._translated("connect") as client:
                await client.ping()
        except StoreUnavailable as exc:
            self._report_outage(exc)  # served regardless; health() says degraded
        else:
            self._up()

    async def close(self) -> None:
        client, sentinel, self._client, self._sentinel = self._client, self._sentinel, None, None
        for closing in (client, sentinel):
            if closing is None:
                continue
            try:
                await closing.aclose()
            except (RedisError, RedisClusterException, OSError) as exc:
                log.warning("redis %s: error while closing: %s", self._where, exc)

    def health(self) -> StoreHealth:
        return self._health

    async def append(self, samples: Sequence[Sample], decisions: Sequence[dict[str, Any]]) -> None:
        self._view.add(samples)  # first, so routing learns from them even if Redis is down
        if not samples and not decisions:
            return
        flush = self._commands.flush(samples, decisions)
        async with self._translated("append") as client:
            if isinstance(client, RedisCluster):
                await self._execute(client, flush.windows)  # on their nodes, then
                await self._execute(client, flush.index)  # announced (module docstring)
            else:
                await self._execute(client, [*flush.windows, *flush.index])
        self._up()

    async def changed_windows(self, known: Mapping[Pair, int]) -> dict[Pair, Window]:
        """Never raises: while Redis is unreachable the windows are this replica's view."""
        try:
            async with self._translated("read windows") as client:
                await self._reader.pull(lambda commands: self._execute(client, commands))
                if self._failed_over():  # the client found new primaries meanwhile
                    await self._reader.pull(lambda commands: self._execute(client, commands))
        except StoreUnavailable as exc:
            self._report_outage(exc)  # routing goes on with this replica's view
        else:
            self._up()
        return self._view.changed(known)

    async def recent_decisions(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        async with self._translated("read decisions") as client:
            [rows] = await self._execute(client, [self._commands.decisions(model, limit)])
        self._up()
        return [orjson.loads(row) for row in rows]

    async def try_lease(self, pair: Pair, slot: str, holder: str, ttl_s: float) -> str | None:
        async with self._translated("probe lease") as client:
            _, held = await self._execute(client, self._commands.lease(pair, slot, holder, ttl_s))
        self._up()
        return None if held is None else bytes(held).decode()

    async def spend_budget(self, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        return await self._budget("spend", spend, limits)

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

    async def refund_budget(self, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        return await self._budget("refund", spend, limits)

    async def _budget(self, op: str, spend: ProbeSpend, limits: BudgetLimits) -> BudgetUse:
        async with self._translated("probe budget") as client:
            [reply] = await self._execute(client, [self._commands.budget(op, spend, limits)])
        self._up()
        return budget_use(reply)

    # Clients' limits (proxy.clients)

    async def admit_client(
        self, ask: ClientAsk, limits: ClientLimits, charges: Sequence[ClientCharge] = ()
    ) -> ClientUse:
        """One pipeline: the charges' CHARGE_CLIENT scripts, then one ADMIT_CLIENT: one
        round trip, the only one on a request's path."""
        commands = [redis_commands.charge_client(self._prefix, c) for c in charges]
        commands.append(redis_commands.admit_client(self._prefix, ask, limits))
        async with self._translated("client limits") as client:
            replies = await self._execute(client, commands)
        self._up()
        return redis_commands.admission(replies[-1])

    async def charge_clients(self, charges: Sequence[ClientCharge]) -> None:
        """One pipeline of CHARGE_CLIENT scripts (one per request)."""
        if not charges:
            return
        commands = [redis_commands.charge_client(self._prefix, c) for c in charges]
        async with self._translated("client charges") as client:
            await self._execute(client, commands)
        self._up()

    async def client_use(
        self, clients: Sequence[str], limits: ClientLimits, day: str, month: str
    ) -> dict[str, ClientUse]:
        commands = [redis_commands.read_client_use(self._prefix, name, limits, day, month)
                    for name in clients]  # fmt: skip
        async with self._translated("client use") as client:
            replies = await self._execute(client, commands)
        self._up()
        pairs = zip(clients, replies, strict=True)
        return {name: redis_commands.client_use(reply) for name, reply in pairs}

    # Failover

    def _failed_over(self) -> bool:
        """Whether the primaries changed since the last look (a Cluster's for some slots, or
        the one Sentinel names); then the reader resyncs: the old primary may have
        acknowledged writes it never replicated (docs/redis.md, "Failover")."""
        seen = topology_of(self._client)
        if not seen:  # no connection made yet, or the client is between two topologies
            return False
        topology, self._topology = self._topology, seen
        if topology is None or topology == seen:
            return False
        log.info("redis %s: the primaries changed (failover): comparing every pair's version",
                 self._where)  # fmt: skip
        self._reader.resync()
        return True

    # The one boundary where Redis errors are translated

    async def _execute(self, client: Client, commands: Sequence[Command]) -> list[Any]:
        """One pipelined round trip (one per node on a Cluster); scripts Redis has forgotten
        are loaded and the commands that needed them re-sent."""
        if not commands:
            return []
        results = await _pipeline(client, commands)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            for script in SCRIPTS:  # to every primary, on a Cluster
                await client.script_load(script.text)
            again = await _pipeline(client, [commands[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    @contextlib.asynccontextmanager
    async def _translated(self, doing: str) -> AsyncIterator[Client]:
        if self._client is None:
            raise self._down(doing, "the store is not started")
        try:
            async with asyncio.timeout(self._config.connect_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise self._down(doing, f"all {self._config.pool_size} connections busy") from None
        try:
            yield self._client
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise self._down(doing, f"{_reason(exc)}: {exc}") from exc
        finally:
            self._slots.release()

    def _down(self, doing: str, why: str) -> StoreUnavailable:
        """Health says degraded; the caller handles (the buffer keeps its batch) or logs."""
        detail = (
            f"redis {self._where} unavailable ({doing}: {why}); "
            "routing on the windows last read plus this replica's own samples"
        )
        self._health = StoreHealth(self.backend, False, detail)
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
            # Writes or reads failed meanwhile; what this replica read may have been lost
            # with a primary, so compare every version at the next refresh.
            self._reader.resync()
            self._health = StoreHealth(self.backend, True, f"redis {self._where}, "
                                       f"prefix {self._prefix!r}")  # fmt: skip


def connect(config: RedisStoreConfig, target: RedisTarget) -> tuple[Client, Sentinel | None]:
    """The client for `target` (no I/O yet), and the Sentinel client to close with it."""
    common: dict[str, Any] = {
        "socket_timeout": config.socket_timeout_s,
        "socket_connect_timeout": config.connect_timeout_s,
        "protocol": 2,  # RESP2: any Redis >= 2.6 and proxies without HELLO; reply shapes fixed
        **_tls_options(config, target),
    }
    retry = Retry(NoBackoff(), 1)  # one retry: a pooled socket may predate a restart
    if target.mode == "single":
        pool = BlockingConnectionPool.from_url(
            config.url.get_secret_value(), max_connections=config.pool_size,
            timeout=config.connect_timeout_s, retry=retry, **common,
        )  # fmt: skip
        return Redis.from_pool(pool), None
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.mode == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        cluster = RedisCluster(startup_nodes=nodes, max_connections=config.pool_size,
                               retry=retry, **auth, **common)  # fmt: skip
        return cluster, None
    sentinel_password = config.sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes),
        sentinel_kwargs={
            "username": config.sentinel_username,
            "password": sentinel_password.get_secret_value() if sentinel_password else None,
            **common,
        },
        **common,
    )
    assert target.service is not None  # parse_redis_url names it for every Sentinel URL
    primary = sentinel.master_for(target.service, max_connections=config.pool_size,
                                  retry=retry, db=target.db, **auth)  # fmt: skip
    return primary, sentinel


def topology_of(client: Client | None) -> object:
    """What changes when a failover does: a Cluster's primaries, the Sentinel's primary."""
    if isinstance(client, RedisCluster):
        return frozenset(node.name for node in client.get_primaries())
    pool = getattr(client, "connection_pool", None)
    return getattr(pool, "master_address", None)  # None for one endpoint


def _tls_options(config: RedisStoreConfig, target: RedisTarget) -> dict[str, Any]:
    if not target.tls:
        return {}
    tls = config.tls
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if target.mode != "single":
        options["ssl"] = True  # a rediss:// URL says so by itself
    if tls is not None:
        options |= {
            "ssl_ca_certs": str(tls.ca_file) if tls.ca_file else None,
            "ssl_certfile": str(tls.cert_file) if tls.cert_file else None,
            "ssl_keyfile": str(tls.key_file) if tls.key_file else None,
            "ssl_check_hostname": tls.check_hostname,
        }
    return options


async def _pipeline(client: Client, commands: Sequence[Command]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))


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
