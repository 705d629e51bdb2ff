"""RedisStore through Sentinel: a primary and its replica watched by three Sentinels, all
over TLS; the data nodes with the documented least-privilege ACL user, the Sentinels with
a password and a user allowed SENTINEL MASTERS only. Discovery, then the primary killed
mid-writes (the kill comes last: one setup for the module)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.core.domain import Pair
from proxy.learning.store.redis_schema import ACL_SENTINEL_COMMANDS, window_key
from tests.redis_server import OPENSSL, LocalSentinels, Tls, needs_redis_server, wait_sync
from tests.store.conftest import StoreFactory
from tests.store.failover import Writer, kill_under_writes, lost, readers_agree
from tests.store.test_redis_acl import PASSWORD, USER, denials, exercise, restrict

pytestmark = [
    needs_redis_server,
    pytest.mark.skipif(OPENSSL is None, reason="openssl not on PATH (TLS certificates)"),
]

SENTINEL_ADMIN_PASSWORD = "sentinel-admin-pw"
SENTINEL_USER, SENTINEL_PASSWORD = "ttft-discovery", "discovery-pw"


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinels]:
    workdir = tmp_path_factory.mktemp("sentinel")
    local = LocalSentinels(workdir, Tls.make(workdir), sentinel_password=SENTINEL_ADMIN_PASSWORD)
    try:
        local.start()
        for server in local.servers:  # the replica too: it becomes the primary
            restrict(server, "s*")
        rules = [f"+{c}" for c in ACL_SENTINEL_COMMANDS]
        local.on_every_sentinel("ACL", "SETUSER", SENTINEL_USER, "reset", "on",
                                f">{SENTINEL_PASSWORD}", "-@all", *rules)  # fmt: skip
        yield local
    finally:
        local.stop()


@pytest.fixture
def url(sentinels: LocalSentinels) -> str:
    return sentinels.url(f"{USER}:{PASSWORD}@")


@pytest.fixture
def options(sentinels: LocalSentinels) -> dict[str, Any]:
    assert sentinels.tls is not None
    return {
        "tls": {"ca_file": str(sentinels.tls.ca)},
        "sentinel_username": SENTINEL_USER,
        "sentinel_password": SENTINEL_PASSWORD,
        "connect_timeout_s": 3.0,  # TLS handshakes on a loaded 2-core machine
    }


async def test_every_operation_through_sentinel_as_the_acl_users_over_tls(
    sentinels: LocalSentinels, url: str, options: dict[str, Any], stores: StoreFactory
) -> None:
    config = {"sweep_s": 0.001, **options}
    store = await stores(url, "s-ops", **config)
    await exercise(store, await stores(url, "s-ops", **config))
    assert f"/{LocalSentinels.SERVICE}/0" in store.health().detail
    assert "pw" not in store.health().detail
    assert all(denials(server) == [] for server in sentinels.servers)


async def test_the_primary_killed_mid_writes(
    sentinels: LocalSentinels, url: str, options: dict[str, Any], stores: StoreFactory
) -> None:
    """Writes pause (refused, kept, sent again) while the Sentinels promote the replica; what
    is lost is what the dead primary acknowledged and had not replicated; every reader ends
    up with what the new primary holds."""
    config = {**options, "socket_timeout_s": 0.5}
    pairs = [Pair(f"model-{i}", "p") for i in range(24)]
    writer = Writer(await stores(url, "skill", replica="w", **config), pairs)
    reader = await stores(url, "skill", replica="r", **config)
    old = sentinels.current_primary()
    assert old is not None

    async def promoted() -> None:
        def new_primary() -> bool:
            primary = sentinels.current_primary()
            return primary is not None and primary is not old and primary.alive

        await asyncio.to_thread(wait_sync, new_primary, 30, "the replica promoted")

    killed_at = await kill_under_writes(writer, reader, old.kill, promoted)
    primary = sentinels.current_primary()
    assert primary is not None
    held = {pair: primary.call("ZRANGE", window_key("skill", pair), 0, -1) for pair in pairs}
    lost(writer, held, killed_at, "the Sentinel primary killed")
    await readers_agree([reader, await stores(url, "skill", replica="f", **config)], held)
