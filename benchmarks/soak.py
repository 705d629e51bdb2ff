"""Soak: N concurrent streams through `ttft-router serve` for M minutes, with faults.

    .venv/bin/python benchmarks/soak.py --minutes 10 --streams 200

Three simulated providers serve model `m`, each its own `python -m proxy.simulator`
process on its own port, all on 127.0.0.1:

- steady: 2% 500s, 1% hangs (cut by the proxy's first-token timeout), 1% mid-stream drops;
- storm:  2% 429s, and 429 storms: every `--outage-every` seconds (half a cycle after the
          flaky provider's outages) restarted for `--outage-s` seconds answering every
          request 429 with Retry-After, then restarted healthy again;
- flaky:  5% 500s, and down and back: killed (SIGKILL, like a crash) every `--outage-every`
          seconds for `--outage-s` seconds, then restarted on the same port.

Every client runs streams back to back (the official wire format, read to `[DONE]`) and
classifies each:
- ok;
- broken after its first token (a mid-stream drop, or the crash or restart of the provider
  serving it: once a token has reached the client the proxy cannot fail over): caused by
  the faults;
- failed, explained by the faults: the proxy's 502/504 lists every attempt it made and each
  one failed with an injected fault (HTTP 500, HTTP 429, no first token: a hang, cannot
  connect or a response broken off: the crash, circuit open) -- every provider it could
  use was faulted at once (e.g. one down, or its circuit still cooling down, while another
  is in a 429 storm: the one left has nobody to fail over to);
- failed, unexplained: anything else (another status, a proxy error that names something
  other than an injected fault, a connection error, a stream broken before its first
  token). This must stay at 0.

It samples the proxy's RSS and open file descriptors every 10 s, and prints them with the
client-side figures. At the end it stops the load, waits for the proxy's descriptors to come
back to their baseline (idle client and upstream connections time out), sends SIGTERM and
reports the exit code. Nothing here is a CI test: it prints figures (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import yaml

KEY = "soak-client-key-0123456789abcdef"
BODY_TOKENS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def behaviours() -> dict[str, dict[str, Any]]:
    base: dict[str, Any] = {
        "warm_ttft": {"median_s": 0.25, "sigma": 0.3},
        "tokens_per_s": 60,
        "max_concurrency": 2000,
    }
    return {
        "steady": base | {"error_500_rate": 0.02, "hang_rate": 0.01, "drop_midstream_rate": 0.01},
        "storm": base | {"error_429_rate": 0.02, "retry_after_s": 2},
        "flaky": base | {"error_500_rate": 0.05},
    }


@dataclass
class Procs:
    tmp: Path
    ports: dict[str, int]
    sims: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    proxy: subprocess.Popen[bytes] | None = None
    proxy_port: int = 0

    def start_sim(self, name: str, *, storm: bool = False) -> None:
        path = self.tmp / f"sim-{name}.yaml"
        behaviour = behaviours()[name] | ({"error_429_rate": 1.0} if storm else {})
        scenario = {
            "seed": hash(name) % 1000,
            "providers": {
                name: {
                    "api_key": f"key-{name}",
                    "port": self.ports[name],
                    "models": {"m-sim": behaviour},
                }
            },
        }
        path.write_text(yaml.safe_dump(scenario))
        log = (self.tmp / f"sim-{name}.log").open("ab")
        self.sims[name] = subprocess.Popen(
            [sys.executable, "-m", "proxy.simulator", str(path)], stdout=log, stderr=log
        )

    def kill_sim(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.sims.pop(name)
        proc.send_signal(sig)
        proc.wait(10)

    def start_proxy(self) -> None:
        self.proxy_port = free_port()
        config = {
            "server": {"port": self.proxy_port, "log_level": "warning"},
            "auth": {"api_keys": [KEY]},
            "providers": {
                name: {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                       "api_key": f"key-{name}",
                       "timeouts": {"first_token_s": 3.0, "total_s": 60}}
                for name, port in self.ports.items()
            },
            "models": {"m": {"providers": dict.fromkeys(self.ports, "m-sim")}},
        }  # fmt: skip
        path = self.tmp / "proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        log = (self.tmp / "proxy.log").open("ab")
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(path)],
            stdout=log, stderr=log,
        )  # fmt: skip

    def stop_all(self) -> None:
        for proc in [*self.sims.values(), *([self.proxy] if self.proxy else [])]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    ttft_s: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    explained: Counter[str] = field(default_factory=Counter)
    retried: Counter[int] = field(default_factory=Counter)


async def one_stream(http: aiohttp.ClientSession, url: str, tally: Tally, retries: int) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "soak"}], "stream": True,
            "max_tokens": BODY_TOKENS}  # fmt: skip
    started = time.monotonic()
    first: float | None = None
    wait: str | None = None
    reason = "no [DONE]"
    try:
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as resp:
            if resp.status != 200:
                text = await resp.text()
                after = resp.headers.get("retry-after", "")
                if retries and resp.status in (429, 503) and after.isdigit():
                    tally.retried[resp.status] += 1  # as the openai SDK does by default
                    wait = after
                elif explained(resp.status, text):
                    tally.outcomes["failed, explained by the faults"] += 1
                    tally.explained[f"{resp.status}: {text[:110]}"] += 1
                    return
                else:
                    tally.outcomes["failed"] += 1
                    tally.failures[f"status {resp.status}: {text[:160]}"] += 1
                    return
            else:
                done = False
                async for line in resp.content:
                    if line.startswith(b'data: {"error"'):
                        break  # the proxy's error event: the stream broke
                    if line.startswith(b"data: {"):
                        if first is None:
                            first = time.monotonic() - started
                    elif line.startswith(b"data: [DONE]"):
                        done = True
                if done and first is not None:
                    tally.outcomes["ok"] += 1
                    tally.ttft_s.append(first)
                    return
    except (TimeoutError, aiohttp.ClientError) as exc:
        reason = type(exc).__name__
    if wait is not None:  # wait as told (bounded), then ask again
        await asyncio.sleep(min(float(wait), 5.0))
        await one_stream(http, url, tally, retries - 1)
    elif first is not None:
        tally.outcomes["broken after first token"] += 1
    else:
        tally.outcomes["failed"] += 1
        tally.failures[reason] += 1


async def client(
    http: aiohttp.ClientSession, url: str, tally: Tally, until: float, retries: int
) -> None:
    while time.monotonic() < until:
        await one_stream(http, url, tally, retries)


def proxy_figures(proc: psutil.Process) -> tuple[float, int]:
    return proc.memory_info().rss / 2**20, proc.num_fds()


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} not ready within {timeout} s")


async def outages(procs: Procs, every_s: float, down_s: float, until: float,
                  log: list[str], t0: float) -> None:  # fmt: skip
    """Flaky down and back, then half a cycle later a 429 storm on storm, and again."""

    def note(what: str) -> None:
        log.append(f"{time.monotonic() - t0:.0f} s {what}")

    while time.monotonic() + every_s + down_s < until:
        await asyncio.sleep(every_s / 2)
        procs.kill_sim("flaky")
        note("flaky down")
        await asyncio.sleep(down_s)
        procs.start_sim("flaky")
        note("flaky back")
        await asyncio.sleep(max(0.0, every_s / 2 - down_s))
        if time.monotonic() + down_s >= until:
            return
        procs.kill_sim("storm", signal.SIGTERM)
        procs.start_sim("storm", storm=True)
        note("storm: 429 storm")
        await asyncio.sleep(down_s)
        procs.kill_sim("storm", signal.SIGTERM)
        procs.start_sim("storm")
        note("storm: healthy")


FAULT_CAUSES = (
    "HTTP 500",
    "HTTP 429",
    "no first token",
    "cannot connect",
    "circuit open",
    "response broken off",
)  # the last: a crash between headers and first token


def explained(status: int, text: str) -> bool:
    """A proxy 502/504 whose every listed attempt failed with an injected fault."""
    try:
        message = str(orjson.loads(text)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    head, sep, attempts = message.partition(": ")
    if (
        status not in (502, 503, 504)
        or not sep
        or not head.startswith(("every provider", "no provider"))
    ):
        return False
    parts = [p.split(": ", 1)[1] if ": " in p else p for p in attempts.split("; ")]
    return bool(parts) and all(p.startswith(FAULT_CAUSES) for p in parts)


async def attempt_counts(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """provider/outcome -> attempts so far, from the proxy's /metrics."""
    pattern = re.compile(r'outcome="([^"]+)",provider="([^"]+)"\} ([0-9.e+]+)')
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    return {f"{m[2]}/{m[1]}": float(m[3]) for m in pattern.finditer(text)
            if "ttft_router_attempts_total" in text}  # fmt: skip


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs = [t / 60 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def soak(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ttft-soak-"))
    procs = Procs(tmp, {name: free_port() for name in behaviours()})
    try:
        for name in behaviours():
            procs.start_sim(name)
        procs.start_proxy()
        assert procs.proxy is not None
        base = f"http://127.0.0.1:{procs.proxy_port}"
        await wait_ready(base)
        proxy = psutil.Process(procs.proxy.pid)
        rss0, fds0 = proxy_figures(proxy)
        duration = args.minutes * 60
        warmup = min(120.0, duration / 5)
        print(f"soak: {args.streams} streams for {args.minutes:g} min against 3 simulated "
              f"providers (logs in {tmp}); proxy pid {proxy.pid}, idle: RSS {rss0:.0f} MiB, "
              f"{fds0} fds", flush=True)  # fmt: skip
        tally = Tally()
        t0 = time.monotonic()
        until = t0 + duration
        events: list[str] = []
        samples: list[tuple[float, float, int]] = []
        connector = aiohttp.TCPConnector(limit=args.streams + 10)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            url = base + "/v1/chat/completions"
            tasks = [asyncio.create_task(client(http, url, tally, until, args.retries))
                     for _ in range(args.streams)]  # fmt: skip
            faults = asyncio.create_task(
                outages(procs, args.outage_every, args.outage_s, until, events, t0)
            )
            seen_attempts = await attempt_counts(http, base)
            unexplained_before = 0
            while not all(t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=10)
                now = time.monotonic() - t0
                rss, fds = proxy_figures(proxy)
                samples.append((now, rss, fds))
                done = sum(tally.outcomes.values())
                o = tally.outcomes
                print(f"{now:6.0f} s  {done:7d} streams  ok {o['ok']:7d}  "
                      f"broken {o['broken after first token']:4d}  "
                      f"explained {o['failed, explained by the faults']:4d}  "
                      f"unexplained {o['failed']:3d}  RSS {rss:6.1f} MiB  fds {fds}",
                      flush=True)  # fmt: skip
                counts = await attempt_counts(http, base)
                if o["failed"] > unexplained_before:  # what the proxy saw meanwhile
                    delta = {k: v - seen_attempts.get(k, 0) for k, v in counts.items()}
                    print(
                        "         attempts in these 10 s: "
                        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(delta.items()) if v),
                        flush=True,
                    )
                seen_attempts, unexplained_before = counts, o["failed"]
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults
        elapsed = time.monotonic() - t0
        if "flaky" not in procs.sims:
            procs.start_sim("flaky")
        # back to baseline: client keep-alives close at once (session closed), upstream
        # keep-alives after the pool's idle timeout (30 s)
        settle_deadline = time.monotonic() + 90
        fds_after = proxy.num_fds()
        while time.monotonic() < settle_deadline and fds_after > fds0 + 2:
            await asyncio.sleep(1)
            fds_after = proxy.num_fds()
        settled_in = 90 - (settle_deadline - time.monotonic())
        rss_end = proxy_figures(proxy)[0]
        async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
            attempts = [line for line in (await resp.text()).splitlines()
                        if line.startswith("ttft_router_attempts_total")]  # fmt: skip
        procs.proxy.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(procs.proxy.wait, 60)
        after_warmup = [(t, r) for t, r, _ in samples if t >= warmup]
        second_half = [(t, r) for t, r, _ in samples if t >= elapsed / 2]
        total = sum(tally.outcomes.values())
        print()
        print(f"command: {' '.join(sys.argv)}")
        print(f"duration {elapsed:.0f} s, {args.streams} concurrent streams, {total} streams "
              f"({total / elapsed:.0f}/s), {BODY_TOKENS} tokens each")  # fmt: skip
        for outcome in ("ok", "broken after first token", "failed, explained by the faults",
                        "failed"):  # fmt: skip
            n = tally.outcomes[outcome]
            label = "failed, unexplained" if outcome == "failed" else outcome
            print(f"  {label:32s} {n:8d}  ({100 * n / max(total, 1):.2f}%)")
        for status, n in sorted(tally.retried.items()):
            print(f"    {n} x {status} with Retry-After: waited and asked again (--retries)")
        for reason, n in tally.explained.most_common(4):
            print(f"    explained: {n} x {reason}")
        for reason, n in tally.failures.most_common(5):
            print(f"    UNEXPLAINED: {n} x {reason}")
        print(f"client TTFT of ok streams: p50 {pct(tally.ttft_s, .5) * 1000:.0f} ms, "
              f"p95 {pct(tally.ttft_s, .95) * 1000:.0f} ms, "
              f"p99 {pct(tally.ttft_s, .99) * 1000:.0f} ms")  # fmt: skip
        if after_warmup:
            rss_w = [r for _, r in after_warmup]
            print(f"proxy RSS: idle {rss0:.1f} MiB; after warm-up ({warmup:.0f} s) "
                  f"{rss_w[0]:.1f} MiB, min {min(rss_w):.1f}, max {max(rss_w):.1f}, end of load "
                  f"{rss_w[-1]:.1f}; slope {slope_mb_per_min(after_warmup):+.2f} MiB/min "
                  f"(second half of the run: {slope_mb_per_min(second_half):+.2f} MiB/min); "
                  f"idle after {rss_end:.1f} MiB")  # fmt: skip
        print(f"proxy fds: baseline {fds0}, max under load {max(f for _, _, f in samples)}, "
              f"after the load {fds_after} (settled in {settled_in:.0f} s)")  # fmt: skip
        print("faults: " + ("; ".join(events) or "no outage (run shorter than one cycle)"))
        print("upstream attempts (proxy /metrics):")
        for line in attempts:
            print("  " + line.removeprefix("ttft_router_attempts_total"))
        print(f"SIGTERM: exit code {code}")
        failed = tally.outcomes["failed"]
        return 0 if failed == 0 and code == 0 and fds_after <= fds0 + 2 else 1
    finally:
        procs.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--retries", type=int, default=0, metavar="N",
                        help="retries after a 429/503 with Retry-After, waiting as told "
                        "(the openai SDK retries twice); 0: every 503 counts (0)")  # fmt: skip
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--outage-every", type=float, default=120.0, metavar="S",
                        help="seconds between outages (and between 429 storms) (120)")  # fmt: skip
    parser.add_argument("--outage-s", type=float, default=20.0, metavar="S",
                        help="seconds each outage and each storm lasts (20)")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
