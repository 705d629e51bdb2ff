"""Real redis-server processes of the test's own, on free loopback ports, stopped by PID:
one server (killed, restarted on the same port), a Redis Cluster of three primaries with a
replica each, and a Sentinel trio over a primary and its replica; TLS certificates for them.
Never the machine's shared Redis. Sentinels are `redis-server --sentinel` (the same binary
as Debian's redis-sentinel, which need not be installed)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
OPENSSL = shutil.which("openssl")

needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not on PATH")
needs_redis_cli = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server and redis-cli not on PATH"
)
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl not on PATH")


def wait_sync(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` (blocking; for sync fixtures) until truthy or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


@dataclass(frozen=True)
class Tls:
    """A throwaway CA and one certificate for 127.0.0.1, used by servers and clients alike."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, workdir: Path) -> Tls:
        assert OPENSSL is not None
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ca, ca_key = workdir / "ca.crt", workdir / "ca.key"
        cert, key, csr = workdir / "node.crt", workdir / "node.key", workdir / "node.csr"
        ext = workdir / "san.cnf"
        ext.write_text("subjectAltName=IP:127.0.0.1\n")
        for argv in (
            ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=ca"],
            ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext],
        ):  # fmt: skip
            subprocess.run([OPENSSL, *map(str, argv)], check=True, capture_output=True)
        return cls(ca, cert, key)

    def server_args(self, port: int) -> list[str]:
        # A replica announces its plain port, 0 here, unless told: Sentinel would skip it.
        return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.cert),
                "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.ca),
                "--tls-auth-clients", "optional", "--tls-replication", "yes",
                "--tls-cluster", "yes", "--replica-announce-port", str(port)]  # fmt: skip

    def cli_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.ca)]

    def client_options(self) -> dict[str, Any]:
        return {"ssl": True, "ssl_ca_certs": str(self.ca), "ssl_certfile": str(self.cert),
                "ssl_keyfile": str(self.key)}  # fmt: skip


class RedisServer:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        password: str | None = None,
        *,
        tls: Tls | None = None,
        args: Sequence[str] = (),
        config_file: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.args = list(args)
        self.config_file = config_file
        self._admin: redis.Redis | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spawn(self) -> None:
        assert REDIS_SERVER is not None
        assert self.process is None or self.process.poll() is not None, "already running"
        head = [str(self.config_file)] if self.config_file else []  # must come first
        listen = self.tls.server_args(self.port) if self.tls else ["--port", str(self.port)]
        auth = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            [REDIS_SERVER, *head, *listen, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *auth, *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Spawn and wait (blocking) until it answers PING; for sync fixtures."""
        self.spawn()

        def ready() -> bool:
            self._check_alive()
            return self.answers()

        wait_sync(ready, timeout, f"redis-server :{self.port} answering")
        return self

    async def start_async(self, timeout: float = 10.0) -> RedisServer:
        """Spawn and wait until it answers PING without blocking the event loop."""
        self.spawn()

        async def ready() -> bool:
            self._check_alive()
            return await asyncio.to_thread(self.answers)

        await wait_until(ready, timeout)
        return self

    def kill(self) -> None:
        """SIGKILL by PID: no shutdown, no save, like a crash."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **options: Any) -> redis.Redis:
        """A blocking client as the default user (the tests' admin), closed by the caller."""
        tls = self.tls.client_options() if self.tls else {}
        settings = {"password": self.password, "socket_timeout": 2, "socket_connect_timeout": 1,
                    "protocol": 2, **tls, **options}  # fmt: skip
        return redis.Redis(host="127.0.0.1", port=self.port, **settings)

    def call(self, *command: Any) -> Any:
        """One command as the default user, on a connection kept until kill()."""
        if self._admin is None:
            self._admin = self.client()
        return self._admin.execute_command(*command)

    def answers(self) -> bool:
        try:
            with self.client(socket_timeout=0.5, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.AuthenticationError:
            return True
        except (redis.RedisError, OSError):
            return False

    def _check_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        assert code is None, f"redis-server :{self.port} exited with {code}"


# A replica's full sync starts at once, not after diskless sync's default 5 s delay.
QUICK_SYNC = ["--repl-diskless-sync-delay", "0"]


class LocalCluster:
    """A Redis Cluster on loopback: three primaries with one replica each, made by
    `redis-cli --cluster create --cluster-replicas 1`, a 1 s node timeout so that a replica
    takes over a killed primary in a few seconds."""

    def __init__(self, workdir: Path, tls: Tls | None = None, node_timeout_ms: int = 1000):
        self.tls = tls
        self.nodes = []
        for _ in range(6):
            port = free_port()
            args = [*QUICK_SYNC, "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-port", str(free_port())]  # fmt: skip
            self.nodes.append(RedisServer(workdir, port, tls=tls, args=args))

    def url(self, credentials: str = "") -> str:
        """`redis[s]+cluster://` naming every node as a seed; `credentials` is "user:pw@"."""
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://{credentials}" + ",".join(n.address for n in self.nodes)

    def start(self, timeout: float = 60.0) -> LocalCluster:
        assert REDIS_CLI is not None
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            wait_sync(node.answers, 10, f"cluster node {node.address} answering")
        tls = self.tls.cli_args() if self.tls else []
        subprocess.run(
            [REDIS_CLI, *tls, "--cluster", "create", *(n.address for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
        wait_sync(self.is_healthy, timeout, "cluster: every slot served, every replica in sync")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def is_healthy(self) -> bool:
        """Every live node says cluster_state:ok, and every live primary has a replica."""
        live = [node for node in self.nodes if node.alive]
        try:
            states = [node.call("CLUSTER", "INFO") for node in live]
            roles = {node.address: node.call("ROLE") for node in live}
        except (redis.RedisError, OSError):
            return False
        ok = all(b"cluster_state:ok" in _bytes(state) for state in states)
        primaries = [role for role in roles.values() if role[0] == b"master"]
        return ok and len(primaries) == 3 and all(role[2] for role in primaries)

    def has_three_primaries(self) -> bool:
        """Every live node says cluster_state:ok and three of them serve the slots."""
        live = [node for node in self.nodes if node.alive]
        try:
            ok = all(b"cluster_state:ok" in _bytes(n.call("CLUSTER", "INFO")) for n in live)
            primaries = [n for n in live if n.call("ROLE")[0] == b"master"]
        except (redis.RedisError, OSError):
            return False
        return ok and len(primaries) == 3

    def primary_of(self, key: str) -> RedisServer:
        return self.primary_of_slot(self._live().call("CLUSTER", "KEYSLOT", key))

    def primary_of_slot(self, slot: int) -> RedisServer:
        for start, end, primary, *_ in self._live().call("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no node serves slot {slot}")

    def primaries(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.alive and n.call("ROLE")[0] == b"master"]

    def on_every_node(self, *command: Any) -> None:
        """Run `command` on every live node (ACL rules, CONFIG SET: not propagated)."""
        for node in self.nodes:
            if node.alive:
                node.call(*command)

    def _live(self) -> RedisServer:
        return next(node for node in self.nodes if node.alive)


class LocalSentinels:
    """A primary, its replica and three Sentinels watching them (quorum 2, 1 s down-after),
    all on loopback; `url` names the Sentinels and the service."""

    SERVICE = "ttft-primary"

    def __init__(self, workdir: Path, tls: Tls | None = None, sentinel_password: str = ""):
        self.tls = tls
        self.sentinel_password = sentinel_password
        self.primary = RedisServer(workdir, tls=tls, args=QUICK_SYNC)
        self.replica = RedisServer(workdir, tls=tls, args=[
            *QUICK_SYNC, "--replicaof", "127.0.0.1", str(self.primary.port)])  # fmt: skip
        self.sentinels = [self._sentinel(workdir, i) for i in range(3)]

    def _sentinel(self, workdir: Path, index: int) -> RedisServer:
        port = free_port()
        config = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
        config.write_text(
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
            f"sentinel failover-timeout {self.SERVICE} 10000\n"
            + (
                f"requirepass {self.sentinel_password}\nsentinel sentinel-pass "
                f"{self.sentinel_password}\n"
                if self.sentinel_password
                else ""
            )
        )
        return RedisServer(workdir, port, tls=self.tls, config_file=config,
                           args=["--sentinel"])  # fmt: skip

    def url(self, credentials: str = "") -> str:
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        hosts = ",".join(s.address for s in self.sentinels)
        return f"{scheme}://{credentials}{hosts}/{self.SERVICE}/0"

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, self.replica]

    def start(self, timeout: float = 60.0) -> LocalSentinels:
        for server in self.servers:
            server.spawn()
        for server in self.servers:
            wait_sync(server.answers, 10, f"redis-server {server.address} answering")
        # Sentinels learn of replicas from the primary's INFO, every 10 s once it is known:
        # they start after the replica is in sync, so that the first INFO names it.
        wait_sync(lambda: self.primary.call("ROLE")[2], timeout, "the replica in sync")
        for sentinel in self.sentinels:
            sentinel.spawn()
        wait_sync(self.is_healthy, timeout, "sentinels: each sees the others and the replica")
        return self

    def stop(self) -> None:
        for server in (*self.sentinels, *self.servers):
            server.kill()

    def current_primary(self) -> RedisServer | None:
        """The server every Sentinel names as the primary, if they agree."""
        try:
            named = {tuple(self._ask(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE))
                     for s in self.sentinels if s.alive}  # fmt: skip
        except (redis.RedisError, OSError):
            return None
        if len(named) != 1:
            return None
        port = int(next(iter(named))[1])
        return next(s for s in self.servers if s.port == port)

    def is_healthy(self) -> bool:
        """The Sentinels agree on a live primary that has an in-sync replica, and each knows
        the other two (so two of three can authorise a failover)."""
        primary = self.current_primary()
        if primary is None or not primary.alive:
            return False
        try:
            role = primary.call("ROLE")
            masters = [self._ask(s, "SENTINEL", "MASTER", self.SERVICE) for s in self.sentinels]
        except (redis.RedisError, OSError):
            return False
        seen = [(int(_field(m, b"num-other-sentinels")), int(_field(m, b"num-slaves")))
                for m in masters]  # fmt: skip
        return role[0] == b"master" and bool(role[2]) and seen == [(2, 1)] * 3

    def on_every_sentinel(self, *command: Any) -> None:
        for sentinel in self.sentinels:
            self._ask(sentinel, *command)

    def _ask(self, sentinel: RedisServer, *command: Any) -> Any:
        with sentinel.client(password=self.sentinel_password or None) as client:
            return client.execute_command(*command)


def _field(flat: list[Any], name: bytes) -> bytes:
    pairs = dict(zip(flat[::2], flat[1::2], strict=True))
    return bytes(pairs[name])


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
