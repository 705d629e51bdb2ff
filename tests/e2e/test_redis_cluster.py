"""Three replicas on a real Redis Cluster (three primaries, a replica each), traffic through
the openai SDK, and the primary holding the change index killed mid-traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.learning.store.redis_schema import changes_key
from tests.e2e.redis_failover import Counts, failover_under_traffic
from tests.redis_server import LocalCluster, needs_redis_cli, wait_sync

pytestmark = needs_redis_cli


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield local.start()
    finally:
        local.stop()


def stored(cluster: LocalCluster) -> Counts:
    """Samples per (model, provider) in every primary's windows."""
    counts: Counts = {}
    for node in cluster.primaries():
        cursor = 0
        while True:
            cursor, keys = node.call("SCAN", cursor, "MATCH", "ttft:*:w:*", "COUNT", 1000)
            for key in keys:
                model, provider = key.decode().split(":{", 1)[1].split("}:w:", 1)
                counts[model, provider] = node.call("ZCARD", key)
            if int(cursor) == 0:
                break
    return counts


async def test_a_primary_killed_mid_traffic_fails_no_request_and_scores_agree_again(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    victim = cluster.primary_of(changes_key("ttft"))

    async def promoted() -> None:
        await asyncio.to_thread(wait_sync, cluster.has_three_primaries, 30, "a replica promoted")

    outcome = await failover_under_traffic(
        tmp_path, cluster.url(), victim.kill, promoted, lambda: stored(cluster)
    )
    print(f"\nCluster primary killed: {outcome}")
    assert outcome.served_during_failover > 0  # routing went on from the replicas' views
    assert outcome.stored <= outcome.served
