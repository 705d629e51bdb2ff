"""RedisStore on a real Redis Cluster (three primaries, a replica each, over TLS, as the
documented least-privilege ACL user): windows spread over the primaries, a flush that fails
on one node, a slot moved mid-use (ASK, then MOVED), forgotten scripts, one probe budget,
one client limit, and a primary killed mid-writes. One cluster for the module; the kill
comes last."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.base import StoreUnavailable
from proxy.learning.store.redis_schema import (
    changes_key,
    model_decisions_key,
    window_key,
)
from tests.redis_server import (
    OPENSSL,
    LocalCluster,
    RedisServer,
    Tls,
    needs_redis_cli,
    wait_sync,
)
from tests.store import budget_contract, clients_contract
from tests.store.conftest import StoreFactory
from tests.store.failover import Writer, kill_under_writes, lost, readers_agree
from tests.store.test_redis_acl import PASSWORD, USER, denials, exercise, restrict

pytestmark = [
    needs_redis_cli,
    pytest.mark.skipif(OPENSSL is None, reason="openssl not on PATH (TLS certificates)"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    local = LocalCluster(workdir, tls=Tls.make(workdir))
    try:
        local.start()
        for node in local.nodes:  # ACL rules are not propagated: every node, replicas too
            restrict(node, "c*", cluster=True)
        yield local
    finally:
        local.stop()


@pytest.fixture
def url(cluster: LocalCluster) -> str:
    return cluster.url(f"{USER}:{PASSWORD}@")


@pytest.fixture
def tls(cluster: LocalCluster) -> dict[str, Any]:
    """The store's TLS options; and time for a burst of TLS handshakes plus AUTH on a
    loaded 2-core machine (0.5 s, the default, is for plain connections nearby)."""
    assert cluster.tls is not None
    return {"tls": {"ca_file": str(cluster.tls.ca)}, "connect_timeout_s": 3.0}


def sample(pair: Pair, ts: float, ttft_s: float = 0.25) -> Sample:
    return Sample(pair.model, pair.provider, Outcome.OK, ttft_s, round(ts, 6), replica="w")


def other_node_model(cluster: LocalCluster, prefix: str, than: RedisServer) -> str:
    """A model whose keys live on another primary than `than`."""
    models = (f"model-{i}" for i in range(100))
    return next(m for m in models if cluster.primary_of(window_key(prefix, Pair(m, "p"))) != than)


def stored(cluster: LocalCluster, key: str) -> list[bytes]:
    members: list[bytes] = cluster.primary_of(key).call("ZRANGE", key, 0, -1)
    return members


async def test_every_operation_on_the_cluster_as_the_acl_user_over_tls(
    cluster: LocalCluster, url: str, tls: dict[str, Any], stores: StoreFactory
) -> None:
    config = {"sweep_s": 0.001, **tls}
    await exercise(await stores(url, "c-ops", **config), await stores(url, "c-ops", **config))
    holding = {cluster.primary_of(window_key("c-ops", Pair(f"model-{i}", f"p{i % 3}"))).port
               for i in range(12)}  # fmt: skip
    assert len(holding) >= 2  # the flush really went to several primaries
    assert all(denials(node) == [] for node in cluster.nodes)


async def test_a_flush_refused_by_one_node_announces_nothing_until_its_retry(
    cluster: LocalCluster, url: str, tls: dict[str, Any], prefix: str, stores: StoreFactory
) -> None:
    prefix = f"c{prefix}"
    writer, reader = await stores(url, prefix, **tls), await stores(url, prefix, **tls)
    index_node = cluster.primary_of(changes_key(prefix))
    refusing = Pair(other_node_model(cluster, prefix, index_node), "p")
    node = cluster.primary_of(window_key(prefix, refusing))
    fine = Pair(other_node_model(cluster, prefix, node), "p")
    batch = [sample(refusing, time.time()), sample(fine, time.time())]
    node.call("CONFIG", "SET", "maxmemory", "1")
    try:
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            await writer.append(batch, [])
        assert index_node.call("ZCARD", changes_key(prefix)) == 0  # windows first, then index
    finally:
        node.call("CONFIG", "SET", "maxmemory", "0")
    await writer.append(batch, [])  # the buffer's retry: the same batch
    windows = await reader.changed_windows({})
    assert {pair: len(w.samples) for pair, w in windows.items()} == {refusing: 1, fine: 1}


async def test_a_slot_moved_mid_use_is_followed_through_ask_and_moved(
    cluster: LocalCluster, url: str, tls: dict[str, Any], prefix: str, stores: StoreFactory
) -> None:
    prefix = f"c{prefix}"
    pair = Pair("moving-model", "p")
    writer, reader = await stores(url, prefix, **tls), await stores(url, prefix, **tls)
    await writer.append([sample(pair, time.time() - 3)], [{"id": "d0", "model": pair.model}])
    known = {p: w.version for p, w in (await reader.changed_windows({})).items()}
    moving = SlotMove.start(cluster, window_key(prefix, pair))
    moving.migrate_keys()  # the keys are on the target; the slot still says the source: ASK
    await writer.append([sample(pair, time.time() - 2, 0.5)], [{"id": "d1", "model": pair.model}])
    moving.finish()  # every node says the target: MOVED, then the client's new map
    await writer.append([sample(pair, time.time() - 1, 0.75)], [])
    windows = await reader.changed_windows(known)
    assert [s.ttft_s for s in windows[pair].samples] == [0.25, 0.5, 0.75]
    decisions = moving.target.call("LRANGE", model_decisions_key(prefix, pair.model), 0, -1)
    assert len(decisions) == 2
    assert len(stored(cluster, window_key(prefix, pair))) == 3


async def test_scripts_every_node_forgot_are_loaded_again(
    cluster: LocalCluster, url: str, tls: dict[str, Any], prefix: str, stores: StoreFactory
) -> None:
    prefix = f"c{prefix}"
    store = await stores(url, prefix, **tls)
    pairs = [Pair(f"model-{i}", "p") for i in range(8)]
    await store.append([sample(pair, time.time()) for pair in pairs], [])
    cluster.on_every_node("SCRIPT", "FLUSH")
    await store.append([sample(pair, time.time() + 1) for pair in pairs], [])
    fresh = await stores(url, prefix, **tls)
    windows = await fresh.changed_windows({})
    assert sorted(len(w.samples) for w in windows.values()) == [2] * 8


async def test_three_replicas_spend_one_budget_on_the_cluster(
    url: str, tls: dict[str, Any], prefix: str, stores: StoreFactory
) -> None:
    prefix = f"c{prefix}"
    replicas = [await stores(url, prefix, replica=f"r{i}", **tls) for i in range(3)]
    await budget_contract.replicas_spend_one_budget(replicas)
    await budget_contract.caps_settles_and_refunds(await stores(url, prefix + "x", **tls))


async def test_three_replicas_admit_one_client_limit_on_the_cluster(
    url: str, prefix: str, stores: StoreFactory, tls: dict[str, Any]
) -> None:
    prefix = f"c{prefix}"
    replicas = [await stores(url, prefix, replica=f"r{i}", **tls) for i in range(3)]
    await clients_contract.replicas_admit_one_limit(replicas, "app")
    await clients_contract.tokens_slots_and_spend(await stores(url, prefix + "t", **tls), "app")


async def test_a_primary_killed_mid_writes(
    cluster: LocalCluster, url: str, tls: dict[str, Any], stores: StoreFactory
) -> None:
    """Writes pause (refused, kept, sent again) while a replica takes over; what is lost is
    only what the dead primary acknowledged in its last moments and had not replicated; every
    reader, old or new, ends up with what the cluster holds."""
    config = {**tls, "socket_timeout_s": 0.5}
    victim = cluster.primary_of(changes_key("ckill"))  # the index and epoch go with it
    pairs = [Pair(f"model-{i}", "p") for i in range(24)]
    assert any(cluster.primary_of(window_key("ckill", p)) == victim for p in pairs)
    writer = Writer(await stores(url, "ckill", replica="w", **config), pairs)
    reader = await stores(url, "ckill", replica="r", **config)

    async def promoted() -> None:
        await asyncio.to_thread(wait_sync, cluster.has_three_primaries, 30, "a replica promoted")

    killed_at = await kill_under_writes(writer, reader, victim.kill, promoted)
    held = {pair: stored(cluster, window_key("ckill", pair)) for pair in pairs}
    lost(writer, held, killed_at, "a Cluster primary killed")
    await readers_agree([reader, await stores(url, "ckill", replica="f", **config)], held)


@dataclass
class SlotMove:
    """Moves the slot of `key` from its primary to another by hand, in the steps a resharding
    takes (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE)."""

    cluster: LocalCluster
    slot: int
    source: RedisServer
    target: RedisServer

    @classmethod
    def start(cls, cluster: LocalCluster, key: str) -> SlotMove:
        source = cluster.primary_of(key)
        target = next(node for node in cluster.primaries() if node != source)
        slot = source.call("CLUSTER", "KEYSLOT", key)
        move = cls(cluster, slot, source, target)
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", move.node_id(source))
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", move.node_id(target))
        return move

    def node_id(self, node: RedisServer) -> str:
        return str(node.call("CLUSTER", "MYID").decode())

    def migrate_keys(self) -> None:
        keys = self.source.call("CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
        assert keys
        self.source.call("MIGRATE", "127.0.0.1", self.target.port, "", 0, 5000, "KEYS", *keys)

    def finish(self) -> None:
        self.migrate_keys_left()
        for node in self.cluster.primaries():
            node.call("CLUSTER", "SETSLOT", self.slot, "NODE", self.node_id(self.target))
        wait_sync(lambda: self.cluster.primary_of_slot(self.slot) == self.target, 10,
                  "every node agrees on the slot's new primary")  # fmt: skip

    def migrate_keys_left(self) -> None:
        keys = self.source.call("CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
        if keys:
            self.source.call("MIGRATE", "127.0.0.1", self.target.port, "", 0, 5000, "KEYS", *keys)
