"""What does ttft-router cost its users? The same streaming workload, side by side, in one run:

    direct       the upstream itself (the physical limit)
    passthrough  benchmarks/passthrough.py: uvicorn + aiohttp, bytes straight through (the floor)
    ttft-router  `ttft-router serve --config <generated yaml>`, log_level warning
    (+ LiteLLM with --litellm PATH, or any OpenAI-compatible base URL with --target)

Modes (default: latency):
    latency       concurrency 1, 16, 64; first token after 20 ms, 20 tokens 2 ms apart; the
                  targets take turns in rounds, so drift on a noisy machine hits all alike
    --throughput  most streamed requests/s through one proxy process (and 2 workers)
    --memory      a steady 64-stream load on ttft-router for --minutes; RSS after warm-up/end

The proxies run pinned to core 0; the upstream and this load client to core 1
(os.sched_setaffinity). Compare ratios within one run, not absolute figures across runs.

    .venv/bin/python benchmarks/overhead.py --out overhead.json
    .venv/bin/python benchmarks/overhead.py --throughput --out throughput.json
    .venv/bin/python benchmarks/overhead.py --memory --minutes 5 --out memory.json
    .venv/bin/python benchmarks/overhead.py --clients 1000 --limits --levels 16
        (beside ttft-router, the same router with 1,000 named keys, each with limits and a
        budget: CPU per request of the two, same run; docs/clients.md)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import LOAD_CORES, Child, Fleet
from loadgen import Batch, Pool, Target

DIRECT, FLOOR, ROUTER = "direct", "passthrough", "ttft-router"
CLIENTS = "ttft-router+keys"  # --clients N [--limits]: N named keys, the load's one of them


@dataclass
class Tally(Batch):
    """One target's figures across all rounds of one level: its batches added up, and the
    CPU its process used meanwhile."""

    cpu_s: float = 0.0
    has_cpu: bool = False

    def add(self, batch: Batch, cpu_s: float | None) -> None:
        self.ttft_s += batch.ttft_s
        self.total_s += batch.total_s
        self.errors += batch.errors
        self.error_examples = (self.error_examples + batch.error_examples)[:5]
        self.wall_s += batch.wall_s
        if cpu_s is not None:
            self.cpu_s += cpu_s
            self.has_cpu = True

    def summary(self) -> dict[str, Any]:
        n = len(self.ttft_s)
        ttft = np.array(self.ttft_s) * 1000 if n else np.array([np.nan])
        total = np.array(self.total_s) * 1000 if n else np.array([np.nan])
        p50, p90, p99 = (float(x) for x in np.percentile(ttft, [50, 90, 99]))
        return {
            "n": n, "errors": self.errors, "error_examples": self.error_examples,
            "ttft_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": float(ttft.mean())},
            "total_ms": {"p50": float(np.percentile(total, 50)),
                         "p99": float(np.percentile(total, 99))},
            "requests_per_s": n / self.wall_s if self.wall_s else 0.0,
            "cpu_s_per_1k_requests": (self.cpu_s / n * 1000) if self.has_cpu and n else None,
        }  # fmt: skip


def cpu_of(child: Child | None) -> float | None:
    return child.cpu_s() if child is not None else None


async def measure(
    pools: dict[str, Pool], owners: dict[str, Child | None], rounds: int, round_s: float,
    max_per_round: int, warmup_s: float,
) -> dict[str, Tally]:  # fmt: skip
    """Warm every target up, then give each `round_s` of load per round, in rotating order."""
    for pool in pools.values():
        warm = await pool.run(warmup_s, max_per_round)
        if warm.errors and not warm.ttft_s:
            raise RuntimeError(f"{pool.target.name}: every warm-up request failed: "
                               f"{warm.error_examples}")  # fmt: skip
    tallies = {name: Tally() for name in pools}
    names = list(pools)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            before = cpu_of(owners.get(name))
            batch = await pools[name].run(round_s, max_per_round)
            after = cpu_of(owners.get(name))
            used = after - before if before is not None and after is not None else None
            tallies[name].add(batch, used)
    return tallies


def compare(level: dict[str, dict[str, Any]]) -> None:
    """Add TTFT added versus direct, and each proxy's ratios to the pass-through's."""
    direct = level.get(DIRECT)
    floor = level.get(FLOOR)
    for name, s in level.items():
        if direct is None or name == DIRECT:
            continue
        s["added_ttft_ms"] = {q: s["ttft_ms"][q] - direct["ttft_ms"][q] for q in ("p50", "p99")}
    for name, s in level.items():
        if floor is None or name in (DIRECT, FLOOR) or "added_ttft_ms" not in s:
            continue
        ratios: dict[str, float | None] = {}
        for q in ("p50", "p99"):
            base = floor["added_ttft_ms"][q]
            ratios[f"added_ttft_{q}"] = s["added_ttft_ms"][q] / base if base > 0 else None
        if s["cpu_s_per_1k_requests"] and floor["cpu_s_per_1k_requests"]:
            ratios["cpu_per_request"] = s["cpu_s_per_1k_requests"] / floor["cpu_s_per_1k_requests"]
        s["vs_passthrough"] = ratios


def compare_clients(level: dict[str, dict[str, Any]]) -> None:
    """CPU per request of the router with named keys (and limits) over the one without."""
    plain, named = level.get(ROUTER), level.get(CLIENTS)
    if plain is None or named is None:
        return
    base, cpu = plain["cpu_s_per_1k_requests"], named["cpu_s_per_1k_requests"]
    ratio = cpu / base if base and cpu else None
    named["cpu_per_request_vs_router"] = ratio
    print(
        f"  {CLIENTS} CPU per request = {fmt(ratio, '.3f')}x {ROUTER}'s "
        f"({fmt(cpu, '.3f')} vs {fmt(base, '.3f')} s per 1k requests)"
    )


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_level(title: str, level: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'target':<16}{'n':>7}{'err':>5}{'p50':>9}{'p90':>9}{'p99':>9}"
          f"{'+p50':>9}{'+p99':>9}{'req/s':>9}{'CPU s/1k req':>14}  vs passthrough")  # fmt: skip
    for name, s in level.items():
        t, added = s["ttft_ms"], s.get("added_ttft_ms", {})
        vs = s.get("vs_passthrough", {})
        ratio = "  ".join(f"{k}={fmt(v)}x" for k, v in vs.items())
        print(f"  {name:<16}{s['n']:>7}{s['errors']:>5}{t['p50']:>9.2f}{t['p90']:>9.2f}"
              f"{t['p99']:>9.2f}{fmt(added.get('p50'), '+.2f'):>9}"
              f"{fmt(added.get('p99'), '+.2f'):>9}{s['requests_per_s']:>9.0f}"
              f"{fmt(s['cpu_s_per_1k_requests'], '.3f'):>14}  {ratio}")  # fmt: skip
        for example in s["error_examples"][:2]:
            print(f"      error: {example}")


Owners = dict[str, Child | None]


def targets_for(
    fleet: Fleet, args: argparse.Namespace, upstream: Child, router_workers: tuple[int, ...] = (1,)
) -> tuple[dict[str, Target], Owners]:
    """The targets of a run, in order, and the process whose CPU each one costs."""
    floor = fleet.passthrough(upstream)
    targets = {DIRECT: Target(DIRECT, upstream.url + "/v1"),
               FLOOR: Target(FLOOR, floor.url + "/v1")}  # fmt: skip
    owners: dict[str, Child | None] = {DIRECT: None, FLOOR: floor}
    for workers in router_workers:
        name = ROUTER if workers == 1 else f"{ROUTER}-{workers}w"
        child = fleet.router(upstream, workers=workers, name=name)
        targets[name], owners[name] = Target(name, child.url + "/v1"), child
        if args.clients and workers == 1:  # the same router with named keys (and limits)
            named = fleet.router(upstream, name=CLIENTS, clients=args.clients,
                                 limits=args.limits)  # fmt: skip
            targets[CLIENTS], owners[CLIENTS] = Target(CLIENTS, named.url + "/v1"), named
    if args.litellm:
        child = fleet.litellm(args.litellm, upstream)
        targets["litellm"], owners["litellm"] = Target("litellm", child.url + "/v1"), child
    for spec in args.target or ():
        name, _, rest = spec.partition("=")
        url, _, pid = rest.partition("@")
        targets[name] = Target(name, url.rstrip("/"))
        owners[name] = _external(name, url, int(pid)) if pid else None
    return targets, owners


def _external(name: str, url: str, pid: int) -> Child:
    """A target someone else started: only its pid (for CPU) matters."""

    class _Popen:  # the little of Popen that Child reads
        def __init__(self, pid: int) -> None:
            self.pid = pid

    return Child(name, _Popen(pid), 0, Path("/dev/null"))  # type: ignore[arg-type]


async def run_latency(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    upstream = fleet.upstream(args.first_token_ms, args.tokens, args.inter_token_ms)
    targets, owners = targets_for(fleet, args, upstream)
    levels: dict[str, Any] = {}
    for concurrency in args.levels:
        pools = {name: Pool(t, concurrency, args.tokens) for name, t in targets.items()}
        try:
            tallies = await measure(pools, owners, args.rounds, args.round_s,
                                    args.max_per_round, args.warmup_s)  # fmt: skip
        finally:
            for pool in pools.values():
                pool.close()
        level = {name: t.summary() for name, t in tallies.items()}
        compare(level)
        print_level(f"concurrency {concurrency}: TTFT ms (first content chunk)", level)
        compare_clients(level)
        levels[str(concurrency)] = level
    return {"workload": {"first_token_ms": args.first_token_ms, "tokens": args.tokens,
                         "inter_token_ms": args.inter_token_ms, "rounds": args.rounds,
                         "round_s": args.round_s}, "levels": levels}  # fmt: skip


async def run_throughput(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    upstream = fleet.upstream(0, args.throughput_tokens, 0)
    targets, owners = targets_for(fleet, args, upstream, router_workers=(1, 2))
    pools = {name: Pool(t, args.throughput_concurrency, args.throughput_tokens)
             for name, t in targets.items()}  # fmt: skip
    try:
        tallies = await measure(pools, owners, args.throughput_rounds, args.throughput_s,
                                10**9, warmup_s=2.0)  # fmt: skip
    finally:
        for pool in pools.values():
            pool.close()
    level = {name: t.summary() for name, t in tallies.items()}
    compare(level)
    floor_rps = level[FLOOR]["requests_per_s"]
    for s in level.values():
        s["rps_vs_passthrough"] = s["requests_per_s"] / floor_rps if floor_rps else None
    print_level(f"throughput: {args.throughput_concurrency} streams, first token at once, "
                f"{args.throughput_tokens} tokens", level)  # fmt: skip
    compare_clients(level)
    for name, s in level.items():
        print(
            f"  {name:<16}{s['requests_per_s']:>9.0f} req/s  "
            f"({fmt(s['rps_vs_passthrough'])}x passthrough), errors {s['errors']}"
        )
    return {"workload": {"concurrency": args.throughput_concurrency,
                         "tokens": args.throughput_tokens, "seconds": args.throughput_s,
                         "rounds": args.throughput_rounds}, "targets": level}  # fmt: skip


async def run_memory(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    upstream = fleet.upstream(args.first_token_ms, args.tokens, args.inter_token_ms)
    router = fleet.router(upstream)
    pool = Pool(Target(ROUTER, router.url + "/v1"), 64, args.tokens)
    total_s = args.minutes * 60
    warmup_s = min(60.0, total_s / 5)
    trace: list[tuple[float, float]] = []
    requests = errors = 0
    begin = time.monotonic()
    try:
        while (elapsed := time.monotonic() - begin) < total_s:
            batch = await pool.run(min(5.0, total_s - elapsed), 10**9)
            requests += len(batch.ttft_s)
            errors += batch.errors
            trace.append((time.monotonic() - begin, router.rss_bytes() / 2**20))
    finally:
        pool.close()
    warm = next((rss for t, rss in trace if t >= warmup_s), trace[0][1])
    end = trace[-1][1]
    growth = (end - warm) / warm * 100
    print(f"\nmemory: 64 streams for {args.minutes} min through ttft-router: {requests} requests, "
          f"{errors} errors; RSS after {warmup_s:.0f} s warm-up {warm:.1f} MiB, at the end "
          f"{end:.1f} MiB ({growth:+.1f}%), max {max(r for _, r in trace):.1f} MiB")  # fmt: skip
    return {"minutes": args.minutes, "warmup_s": warmup_s, "requests": requests,
            "errors": errors, "rss_mib_after_warmup": warm, "rss_mib_end": end,
            "growth_pct": growth, "trace": trace}  # fmt: skip


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": os.getloadavg()}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", help="write every figure as JSON here")
    p.add_argument("--latency", action="store_true", help="run latency mode too (the default)")
    p.add_argument("--throughput", action="store_true", help="throughput mode")
    p.add_argument("--memory", action="store_true", help="memory mode (64 streams, --minutes)")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--round-s", type=float, default=2.5, help="seconds per target per round")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--max-per-round", type=int, default=20_000)
    p.add_argument("--first-token-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--inter-token-ms", type=float, default=2.0)
    p.add_argument("--throughput-concurrency", type=int, default=128)
    p.add_argument("--throughput-tokens", type=int, default=3)
    p.add_argument("--throughput-s", type=float, default=8.0)
    p.add_argument("--throughput-rounds", type=int, default=2)
    p.add_argument("--litellm", metavar="PATH", help="the `litellm` executable of a side venv")
    p.add_argument(
        "--target",
        action="append",
        metavar="NAME=URL[@PID]",
        help="another OpenAI-compatible base URL (…/v1); PID for its CPU",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument(
        "--clients",
        type=int,
        default=0,
        metavar="N",
        help=f"also run {CLIENTS}: the router with N named keys (the load's one)",
    )
    p.add_argument(
        "--limits",
        action="store_true",
        help="with --clients: every key has rate limits and a budget (never hit)",
    )
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    fleet = Fleet(pin=not args.no_pin)
    if fleet.pin:
        os.sched_setaffinity(0, LOAD_CORES)
    report: dict[str, Any] = {"machine": machine(), "pinned": fleet.pin, "logs": str(fleet.dir)}
    print(f"pinned: {fleet.pin} (proxies on core 0, upstream + load client on core 1); "
          f"logs in {fleet.dir}")  # fmt: skip
    try:
        if args.latency or not (args.throughput or args.memory):
            report["latency"] = await run_latency(fleet, args)
            fleet.stop_all()
        if args.throughput:
            report["throughput"] = await run_throughput(fleet, args)
            fleet.stop_all()
        if args.memory:
            report["memory"] = await run_memory(fleet, args)
    finally:
        fleet.stop_all()
    return report


def main() -> None:
    args = parse_args()
    report = uvloop.run(main_async(args))
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2
                                                | orjson.OPT_SERIALIZE_NUMPY))  # fmt: skip
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
