"""The least-privilege ACL of docs/redis.md is sufficient: every store operation, as a user
allowed this prefix's keys and the commands of `acl_rules` only (on one server here; the
Cluster and Sentinel tests run as such a user too). And the list is the code's."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from proxy.core.domain import Outcome, Pair, Sample
from proxy.learning.store.base import (
    BudgetLimits,
    ClientAsk,
    ClientCharge,
    ClientLimits,
    ProbeSpend,
    StoreUnavailable,
)
from proxy.learning.store.redis_commands import Commands
from proxy.learning.store.redis_schema import (
    ACL_CLUSTER_COMMANDS,
    ACL_COMMANDS,
    SCRIPTS,
    acl_rules,
)
from proxy.learning.store.redis_store import RedisStore
from proxy.settings.config import RedisStoreConfig
from tests.redis_server import OPENSSL, RedisServer, Tls
from tests.store.conftest import StoreFactory

DOCS = Path(__file__).resolve().parents[2] / "docs" / "redis.md"
USER, PASSWORD = "ttft-app", "app-pw"


def restrict(server: RedisServer, prefix_glob: str, cluster: bool = False) -> None:
    """Create the store's user on `server` with exactly the documented rules."""
    rules = acl_rules(prefix_glob, cluster=cluster).split()
    server.call("ACL", "SETUSER", USER, "reset", "on", f">{PASSWORD}", *rules)


def denials(server: RedisServer) -> list[tuple[bytes, bytes]]:
    entries = server.call("ACL", "LOG")
    return [(e[e.index(b"reason") + 1], e[e.index(b"object") + 1]) for e in entries]


async def exercise(store: RedisStore, reader: RedisStore) -> None:
    """Every kind of operation the store has: appends (windows, index, decisions), full
    and tail reads and a sweep, both decision logs, a lease, the budget."""
    now = time.time()
    pairs = [Pair(f"model-{i}", f"p{i % 3}") for i in range(12)]
    await store.append([Sample(p.model, p.provider, Outcome.OK, 0.1, now - 5) for p in pairs],
                       [{"id": "d1", "model": "model-1"}])  # fmt: skip
    known = {p: w.version for p, w in (await reader.changed_windows({})).items()}
    assert len(known) == 12
    await store.append([Sample("model-1", "p1", Outcome.OK, 0.2, now)], [])
    tail = await reader.changed_windows(known)
    assert [s.ttft_s for s in tail[Pair("model-1", "p1")].samples] == [0.1, 0.2]
    assert [d["id"] for d in await reader.recent_decisions(None, 5)] == ["d1"]
    assert [d["id"] for d in await reader.recent_decisions("model-1", 5)] == ["d1"]
    assert await store.try_lease(pairs[0], "g1", "one", 5.0) == "one"
    limits = BudgetLimits(60, 5, 1.0, 2, 0.5)
    assert (await store.spend_budget(ProbeSpend("s1", "model-1", 0.01), limits)).granted
    assert (await reader.refund_budget(ProbeSpend("s1", "model-1", 0.01), limits)).probes == 0
    ask = ClientAsk("app", f"r-{now}", 5, "20250131", "202501")
    assert (await store.admit_client(ask, ClientLimits(requests=2, tokens=50))).granted
    await reader.charge_clients([ClientCharge("app", ask.request_id, 4, 0.001, ask.day,
                                              ask.month)])  # fmt: skip
    [use] = (await reader.client_use(["app"], ClientLimits(), ask.day, ask.month)).values()
    assert use.tokens_day >= 4 and use.usd_day >= 0.001
    assert store.health().ok and reader.health().ok, (store.health(), reader.health())


async def test_the_documented_acl_is_enough_on_one_server(
    own_redis: RedisServer, stores: StoreFactory
) -> None:
    await own_redis.start_async()
    restrict(own_redis, "acl*")  # the tests' prefixes; a deployment names its own
    url = f"redis://{USER}:{PASSWORD}@127.0.0.1:{own_redis.port}/0"
    config = {"sweep_s": 0.001}  # a whole sweep at every refresh: HGETALL too
    await exercise(await stores(url, "acl", **config), await stores(url, "acl", **config))
    own_redis.call("SCRIPT", "FLUSH")  # the scripts are loaded again, as this user
    await exercise(await stores(url, "acl2", **config), await stores(url, "acl2", **config))
    assert denials(own_redis) == []
    other = await stores(url, "other-prefix")  # another deployment's keys: refused
    with pytest.raises(StoreUnavailable, match="no permissions to access one of the keys"):
        await other.append([Sample("m", "p", Outcome.OK, 0.1, time.time())], [])
    assert denials(own_redis)[-1][0] == b"key"


def test_the_acl_lists_every_command_the_scripts_and_the_store_send() -> None:
    called = {c.lower() for s in SCRIPTS for c in re.findall(r"redis\.call\('(\w+)'", s.text)}
    assert called <= set(ACL_COMMANDS), called - set(ACL_COMMANDS)
    commands = Commands(RedisStoreConfig(kind="redis", url="redis://h"), "r")
    pair = Pair("m", "p")
    sent = [
        *commands.flush([Sample("m", "p", Outcome.OK, 0.1, 1.0)], [{"model": "m"}]).windows,
        *commands.poll(None, ["m"]), commands.read_window(pair, -1, 0.0),
        *commands.lease(pair, "g1", "r", 1.0), commands.decisions(None, 1),
        commands.budget("spend", ProbeSpend("s", "m", 0.1), BudgetLimits(1, 1, 1.0)),
    ]  # fmt: skip
    names = {str(c[0]).lower() for c in sent} | {"script|load", "ping"}
    assert names <= set(ACL_COMMANDS), names - set(ACL_COMMANDS)


def test_docs_print_the_rules_of_the_code() -> None:
    text = DOCS.read_text()
    assert acl_rules("ttft") in text
    assert acl_rules("ttft", cluster=True) in text
    assert all(f"+{c}" in text for c in ACL_CLUSTER_COMMANDS)


@pytest.mark.skipif(OPENSSL is None, reason="openssl not on PATH (TLS certificates)")
async def test_tls_to_one_server_with_a_private_ca_and_a_client_certificate(
    tmp_path: Path, stores: StoreFactory
) -> None:
    tls = Tls.make(tmp_path)
    server = RedisServer(tmp_path, tls=tls, args=["--tls-auth-clients", "yes"])
    try:
        await server.start_async()
        restrict(server, "tls*")
        url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{server.port}/0"
        files = {"ca_file": str(tls.ca), "cert_file": str(tls.cert), "key_file": str(tls.key)}
        options = {"tls": files, "connect_timeout_s": 3.0}
        store = await stores(url, "tls", **options)
        await exercise(store, await stores(url, "tls", **options))
        assert store.health().detail.startswith(f"redis rediss://127.0.0.1:{server.port}/0")
        no_cert = await stores(url, "tls", tls={"ca_file": str(tls.ca)}, connect_timeout_s=3.0)
        assert not no_cert.health().ok  # the server asks for a client certificate
    finally:
        server.kill()
