"""A real redis-server of the test's own, on a free loopback port: started, killed by PID,
restarted on the same port. Never the machine's shared Redis."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server")

needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not on PATH")


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def spawn(self) -> None:
        assert REDIS_SERVER is not None
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir),
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Spawn and wait (blocking) until it answers PING; for sync fixtures."""
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self.answers():
            self._check_alive()
            assert time.monotonic() < deadline, f"redis-server :{self.port} silent for {timeout} s"
            time.sleep(0.02)
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
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _check_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        assert code is None, f"redis-server :{self.port} exited with {code}"
