"""Three replicas on a Sentinel-managed primary (a replica and three Sentinels beside it),
traffic through the openai SDK, and the primary killed mid-traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.redis_failover import Counts, failover_under_traffic
from tests.redis_server import LocalSentinels, RedisServer, needs_redis_server, wait_sync

pytestmark = needs_redis_server


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinels]:
    local = LocalSentinels(tmp_path_factory.mktemp("sentinel"))
    try:
        yield local.start()
    finally:
        local.stop()


def stored(server: RedisServer) -> Counts:
    """Samples per (model, provider) in the windows `server` holds."""
    counts: Counts = {}
    for key in server.call("KEYS", "ttft:*:w:*"):
        model, provider = key.decode().split(":{", 1)[1].split("}:w:", 1)
        counts[model, provider] = server.call("ZCARD", key)
    return counts


async def test_the_primary_killed_mid_traffic_fails_no_request_and_scores_agree_again(
    tmp_path: Path, sentinels: LocalSentinels
) -> None:
    old = sentinels.current_primary()
    assert old is not None
    other = next(server for server in sentinels.servers if server is not old)

    async def promoted() -> None:
        def new_primary() -> bool:
            return sentinels.current_primary() is other and other.call("ROLE")[0] == b"master"

        await asyncio.to_thread(wait_sync, new_primary, 30, "the replica promoted")

    def held() -> Counts:
        return stored(other)  # the replica before the kill, the primary after

    outcome = await failover_under_traffic(tmp_path, sentinels.url(), old.kill, promoted, held)
    print(f"\nSentinel primary killed: {outcome}")
    assert outcome.served_during_failover > 0  # routing went on from the replicas' views
    assert outcome.stored <= outcome.served
