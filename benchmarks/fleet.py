"""Start, pin, watch and stop the processes of an overhead run (all on 127.0.0.1).

The upstream, the pass-through, ttft-router (`ttft-router serve --config <generated yaml>`)
and, when asked, the LiteLLM proxy run as subprocesses. Each is pinned with
os.sched_setaffinity right after it starts (children such as uvicorn workers inherit it):
proxies on core 0, the upstream (and the load client, see overhead.py) on core 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PROXY_CORES = {0}
LOAD_CORES = {1}


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process and all its children so far."""
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total


class Fleet:
    """Owns every child process of a run; `stop_all` ends them by pid (SIGTERM, then KILL)."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin and can_pin()
        self.dir = Path(tempfile.mkdtemp(prefix="ttft-overhead-"))
        self.children: list[Child] = []

    def start(
        self, name: str, argv: Sequence[str], port: int, cores: set[int] | None,
        ready_timeout_s: float = 30.0, env: dict[str, str] | None = None,
    ) -> Child:  # fmt: skip
        log = self.dir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=HERE.parent,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )  # fmt: skip
        child = Child(name, popen, port, log)
        self.children.append(child)
        if self.pin and cores:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(popen.pid, cores)
        self._wait_listening(child, ready_timeout_s)
        return child

    def _wait_listening(self, child: Child, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.popen.poll() is not None:
                raise RuntimeError(f"{child.name} exited early: see {child.log}\n"
                                   + child.log.read_text()[-2000:])  # fmt: skip
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", child.port), timeout=0.5),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} not listening on {child.port} after {timeout_s} s")

    def stop(self, child: Child, timeout_s: float = 10.0) -> None:
        if child.popen.poll() is None:
            child.popen.send_signal(signal.SIGTERM)
            try:
                child.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait(5)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in list(reversed(self.children)):
            self.stop(child)

    # -- the processes of a run ------------------------------------------------------------

    def upstream(self, first_token_ms: float, tokens: int, inter_token_ms: float) -> Child:
        port = free_port()
        argv = [sys.executable, str(HERE / "upstream.py"), "--port", str(port),
                "--first-token-ms", str(first_token_ms), "--tokens", str(tokens),
                "--inter-token-ms", str(inter_token_ms)]  # fmt: skip
        return self.start("upstream", argv, port, LOAD_CORES)

    def passthrough(self, upstream: Child) -> Child:
        port = free_port()
        argv = [sys.executable, str(HERE / "passthrough.py"), "--upstream", upstream.url,
                "--port", str(port)]  # fmt: skip
        return self.start("passthrough", argv, port, PROXY_CORES)

    def router(
        self, upstream: Child, *, workers: int = 1, name: str = "ttft-router", clients: int = 0,
        limits: bool = False,
    ) -> Child:  # fmt: skip
        """`ttft-router serve`; with `clients`, that many named keys (the load client's key
        one of them), each with limits and a budget when `limits` (none of them reached)."""
        port = free_port()
        config = self.dir / f"{name}.yaml"
        text = router_config(upstream.url, port, workers)
        if clients:
            text = text.replace(f"  api_keys: [{BENCH_KEY}]\n", clients_auth(clients, limits))
        config.write_text(text)
        argv = [str(BIN / "ttft-router"), "serve", "--config", str(config)]
        # With 2 workers there is nothing to gain on core 0 alone: they get both cores.
        cores = PROXY_CORES if workers == 1 else PROXY_CORES | LOAD_CORES
        return self.start(name, argv, port, cores)

    def simulator(self, scenario: Path, port: int, *, name: str = "simulator") -> Child:
        """`python -m proxy.simulator scenario`; ready once `port` (its last provider's,
        bound last) listens."""
        argv = [sys.executable, "-m", "proxy.simulator", str(scenario)]
        return self.start(name, argv, port, LOAD_CORES)

    def serve(self, name: str, config_text: str, port: int) -> Child:
        """`ttft-router serve` with a config of the caller's (its server.port is `port`)."""
        config = self.dir / f"{name}.yaml"
        config.write_text(config_text)
        argv = [str(BIN / "ttft-router"), "serve", "--config", str(config)]
        return self.start(name, argv, port, PROXY_CORES)

    def litellm(self, executable: str, upstream: Child) -> Child:
        port = free_port()
        config = self.dir / "litellm.yaml"
        config.write_text(litellm_config(upstream.url))
        argv = [executable, "--config", str(config), "--host", "127.0.0.1",
                "--port", str(port), "--num_workers", "1"]  # fmt: skip
        # No internet here: the price map LiteLLM ships with, not a download at import. No
        # master key (the load client sends its bench key): newer LiteLLM refuses to start
        # without one unless told this is local use, which it is (127.0.0.1 only).
        env = {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}  # fmt: skip
        return self.start("litellm", argv, port, PROXY_CORES, ready_timeout_s=180, env=env)


BENCH_KEY = "bench-client-key-0123456789abcdef"  # loadgen.Target's default key


def clients_auth(count: int, limits: bool) -> str:
    """`auth.clients` of `count` named keys; the load client's is the last. With `limits`:
    every limit and budget set, far above what a run uses (the checks run, none refuses)."""
    rules = ("    limits: {requests_per_minute: 100000000, tokens_per_minute: 10000000000, "
             "concurrent_requests: 100000}\n    budget: {usd_per_day: 1000000, "
             "usd_per_month: 10000000}\n") if limits else ""  # fmt: skip
    lines = ["  clients:"]
    for i in range(count):
        key = BENCH_KEY if i == count - 1 else f"bench-{i:04d}-client-key-5f3a9c1e7b2d"
        lines.append(f"   client-{i:04d}:\n    key: {key}\n{rules}")
    return "\n".join(lines) + "\n"


def router_config(upstream_url: str, port: int, workers: int) -> str:
    return f"""# generated by benchmarks/overhead.py
server:
  host: 127.0.0.1
  port: {port}
  log_level: warning
  workers: {workers}
auth:
  api_keys: [{BENCH_KEY}]
store:
  kind: memory
providers:
  upstream:
    kind: openai
    base_url: {upstream_url}/v1
models:
  bench-model:
    providers:
      upstream: upstream-model
"""


def litellm_config(upstream_url: str) -> str:
    return f"""# generated by benchmarks/overhead.py
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/upstream-model
      api_base: {upstream_url}/v1
      api_key: bench-upstream-key
litellm_settings:
  set_verbose: false
  telemetry: false
"""
