"""What a 32,000-token stream=false answer costs the other streams of the same worker.

Runs two fake providers (subprocesses: this file with --provider; one serves the big
answers, pre-rendered, the other the tickers, so that neither's work shows as the proxy's)
and `ttft-router serve` (one worker, a subprocess) on 127.0.0.1. Four "ticker" streams run
through the proxy all along,
each a chunk every 10 ms; meanwhile stream=false requests for 32,000 tokens (one token per
upstream chunk, optionally with 5 top logprobs each) are sent one after another. The
figure is the stall of the tickers: the largest gap between two of their chunks beyond the
10 ms tick, while big answers are assembled, against the same with no big answer running.
Also printed: each big answer's latency and the proxy's RSS growth.

    .venv/bin/python benchmarks/whole_answer_stall.py [--logprobs] [--big 5]

The proxy is the package on PYTHONPATH (create_app + proxy.server's listeners, as `serve`
runs them, with the lag timer beside), so the same script measures another tree.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import psutil
import uvloop
from aiohttp import web

TICK_S = 0.010
TICKERS = 4
TOKENS = 32_000
BATCH = 64  # upstream events per write: a fast provider fills every read
TOP_LOGPROBS = 2  # with --logprobs (5 would pass the 16 MiB cap at 32,000 tokens)


def chunk(token: str, logprobs: bool, finish: str | None = None) -> bytes:
    choice: dict[str, object] = {"index": 0, "delta": {"content": token}, "finish_reason": finish}
    if logprobs:
        top = [{"token": f"t{i}", "logprob": -1.0 - i, "bytes": [116, 48 + i]}
               for i in range(TOP_LOGPROBS)]  # fmt: skip
        choice["logprobs"] = {"content": [
            {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": top}
        ]}  # fmt: skip
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "u",
            "choices": [choice]}  # fmt: skip
    return b"data: " + orjson.dumps(body) + b"\n\n"


BIG = {
    logprobs: [
        b"".join(chunk(f" w{i % 97}", logprobs) for i in range(start, start + BATCH))
        for start in range(0, TOKENS, BATCH)
    ]
    for logprobs in (False, True)
}


async def provider_handler(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if body.get("max_tokens") == TOKENS:  # the big answer, as fast as the socket takes it
        for batch in BIG[bool(body.get("logprobs"))]:
            await response.write(batch)
    else:  # a ticker: one chunk per TICK_S, until the client leaves or max_tokens ticks
        for _ in range(int(body.get("max_tokens") or 100)):
            await response.write(chunk("x", False))
            await asyncio.sleep(TICK_S)
    await response.write(chunk("", False, "stop") + b"data: [DONE]\n\n")
    return response


def run_provider(port_file: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", provider_handler)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await asyncio.Event().wait()

    uvloop.run(main())


def run_proxy(config_path: str, lag_file: str) -> None:
    """`ttft-router serve` for one worker, with a loop-lag timer in its loop; on SIGTERM the
    lags over 0.5 ms go to `lag_file` as [[perf_counter, lag_s], ...]."""
    from proxy.app import create_app, tune_gc_for_serving
    from proxy.server import serve, uvicorn_configs
    from proxy.settings.config import load_config

    config = load_config(config_path)
    lags: list[tuple[float, float]] = []

    async def watch_lag() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = time.perf_counter() - before - 0.001
            if lag > 0.0005:
                lags.append((before, lag))

    async def main() -> None:
        app = create_app(config)
        tune_gc_for_serving()
        main_cfg, admin_cfg = uvicorn_configs(app, config.server, "127.0.0.1", config.server.port)
        watcher = asyncio.create_task(watch_lag())
        await serve(main_cfg, admin_cfg)
        watcher.cancel()

    uvloop.run(main())
    Path(lag_file).write_bytes(orjson.dumps(lags))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_file(path: Path, timeout_s: float) -> str:
    """The file's text once it has some."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise SystemExit(f"{path} not written within {timeout_s} s")


class Ticker:
    """One stream=true request whose chunk arrival times are recorded."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    async def run(self, http: aiohttp.ClientSession, url: str, key: str, ticks: int) -> None:
        body = {"model": "ticker", "messages": [{"role": "user", "content": "tick"}],
                "stream": True, "max_tokens": ticks}  # fmt: skip
        headers = {"Authorization": f"Bearer {key}"}
        async with http.post(url, json=body, headers=headers) as response:
            async for _ in response.content.iter_any():
                self.arrivals.append(time.perf_counter())


def gaps_ms(tickers: list[Ticker], start: float, end: float) -> tuple[float, float]:
    """The worst and the 99th-percentile gap between two chunks of a ticker, in ms."""
    gaps = sorted(
        b - a
        for t in tickers
        for a, b in zip(t.arrivals, t.arrivals[1:], strict=False)
        if start <= b <= end
    )
    if not gaps:
        return 0.0, 0.0
    return gaps[-1] * 1000, gaps[int(0.99 * (len(gaps) - 1))] * 1000


Window = tuple[float, float]


async def measure(
    url: str, key: str, big: int, logprobs: bool, proxy_pid: int
) -> tuple[Window, Window]:
    """Prints what the clients saw; returns the busy and the quiet window (perf_counter)."""
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        warm = {"model": "ticker", "messages": [{"role": "user", "content": "w"}], "max_tokens": 5}
        async with http.post(url, json=warm, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200, await r.text()
        rss_before = psutil.Process(proxy_pid).memory_info().rss
        ticks = int((1.0 + big * 4.0) / TICK_S)
        tickers = [Ticker() for _ in range(TICKERS)]
        running = [asyncio.create_task(t.run(http, url, key, ticks)) for t in tickers]
        await asyncio.sleep(0.5)
        latencies, sizes = [], []
        busy_start = time.perf_counter()
        for _ in range(big):
            body = {"model": "big", "messages": [{"role": "user", "content": "write a lot"}],
                    "max_tokens": TOKENS}  # fmt: skip
            if logprobs:
                body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
            started = time.perf_counter()
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
                payload = await r.read()
                assert r.status == 200, payload[:300]
            latencies.append(time.perf_counter() - started)
            sizes.append(len(payload))
        busy = (busy_start, time.perf_counter())
        await asyncio.sleep(busy[1] - busy[0])  # as long again with the tickers alone
        quiet = (busy[1], time.perf_counter())
        rss_after = psutil.Process(proxy_pid).memory_info().rss
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    (alone, alone_p99), (during, during_p99) = gaps_ms(tickers, *quiet), gaps_ms(tickers, *busy)
    with_logprobs = f" with {TOP_LOGPROBS} top logprobs" if logprobs else ""
    print(f"stream=false answers of {TOKENS:,} tokens{with_logprobs}"
          f" (answer {statistics.mean(sizes) / 1e6:.1f} MB), {big} in a row, "
          f"{TICKERS} ticker streams at {TICK_S * 1000:g} ms")  # fmt: skip
    print(
        f"  big answer latency: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    tick_ms = TICK_S * 1000
    print(
        f"  ticker gaps during the big answers: worst {during:.1f} ms, p99 {during_p99:.1f} ms;"
        f" as long with the tickers alone: worst {alone:.1f} ms, p99 {alone_p99:.1f} ms"
    )
    print(f"  stall beyond the {tick_ms:g} ms tick: {max(during - tick_ms, 0):.1f} ms "
          f"(tickers alone: {max(alone - tick_ms, 0):.1f} ms)")  # fmt: skip
    print(f"  proxy RSS: {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB after")
    return busy, quiet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=5, help="big answers in a row")
    parser.add_argument("--logprobs", action="store_true", help="top logprobs per token")
    parser.add_argument("--provider", help=argparse.SUPPRESS)  # internal: a fake provider
    parser.add_argument("--proxy", nargs=2, help=argparse.SUPPRESS)  # internal: the proxy
    args = parser.parse_args()
    if args.provider:
        run_provider(args.provider)
        return 0
    if args.proxy:
        run_proxy(*args.proxy)
        return 0
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"{name}.port" for name in ("big", "ticker")]
        children = [subprocess.Popen([sys.executable, __file__, "--provider", str(f)])
                    for f in files]  # fmt: skip
        try:
            big_port, ticker_port = (wait_for_file(f, 30) for f in files)
            port = free_port()
            config = Path(tmp) / "config.yaml"
            config.write_text(
                f"server: {{host: 127.0.0.1, port: {port}, log_level: warning}}\n"
                f"auth: {{api_keys: ['{key}']}}\n"
                "providers:\n"
                f"  b: {{kind: openai, base_url: 'http://127.0.0.1:{big_port}/v1'}}\n"
                f"  t: {{kind: openai, base_url: 'http://127.0.0.1:{ticker_port}/v1'}}\n"
                "models: {big: {providers: {b: u}}, ticker: {providers: {t: u}}}\n"
                "prober: {enabled: false}\n"
            )
            lag_file = Path(tmp) / "lags.json"
            proxy = subprocess.Popen([sys.executable, __file__, "--proxy", str(config),
                                      str(lag_file)])  # fmt: skip
            children.append(proxy)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            wait_until_up(f"http://127.0.0.1:{port}/healthz", 60)
            windows = uvloop.run(measure(url, key, args.big, args.logprobs, proxy.pid))
        finally:
            for process in children:
                process.terminate()
                process.wait(timeout=30)
        lags = orjson.loads(wait_for_file(lag_file, 10))
        (busy_start, busy_end), (quiet_start, quiet_end) = windows
        busy = max((lag for t, lag in lags if busy_start <= t <= busy_end), default=0.0)
        quiet = max((lag for t, lag in lags if quiet_start <= t <= quiet_end), default=0.0)
        print(f"  proxy event-loop lag: worst {busy * 1000:.1f} ms during the big answers, "
              f"{quiet * 1000:.1f} ms with the tickers alone")  # fmt: skip
    return 0


def wait_until_up(url: str, timeout_s: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} not up within {timeout_s} s")


if __name__ == "__main__":
    sys.exit(main())
