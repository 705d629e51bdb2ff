"""Microseconds per operation of the two things every request does besides moving bytes.

    routing decision    Routing.plan on a scoreboard of 10 proven providers for one model
                        (target < 50 us): ranked anew (a new snapshot each call, as after
                        every scoreboard refresh) and on the same snapshot (a posterior
                        draw per request; the component reuses a ranking only when the
                        pairs' ranges of draws are disjoint, which these overlapping
                        providers' are not); the reason text is rendered only when read,
                        timed apart (ranking anew + rendering)
    recording a sample  Recorder.sample: SampleBuffer.add_sample + the Prometheus
                        attempt counter and TTFT histogram (target < 10 us)
    deadline            a first-token deadline armed and left unexpired under uvloop:
                        asyncio.timeout, proxy.core.timers.Deadline, and the bare loop timer
                        under both (no target)

Scores come from proxy.learning.stats.score_model (with their posteriors, as the scoreboard makes
them) over synthetic windows (so they are shaped like real ones); timeit-style: the best of
--repeat runs of --number calls.

    .venv/bin/python benchmarks/micro.py
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import timeit
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

import uvloop

from proxy.core.domain import Outcome, Pair, Sample, Score
from proxy.learning.stats import compute_score
from proxy.routing import RouteRequest, Routing
from proxy.serving.recorder import Recorder
from proxy.settings.config import BufferConfig, MemoryStoreConfig
from proxy.settings.policy import ModelPolicy, PolicyHolder, PolicySet
from proxy.settings.pricing import PairPrice
from proxy.telemetry.metrics import Metrics

try:
    from proxy.learning.stats import score_model
except ImportError:  # pragma: no cover - measuring a tree from before posteriors
    score_model = None  # type: ignore[assignment]
from proxy.core.timers import Deadline
from proxy.learning.store.buffer import SampleBuffer
from proxy.learning.store.memory import MemoryStore

MODEL = "deepseek-v4-pro"


def scoreboard(providers: int, policy: ModelPolicy, now: float) -> dict[Pair, Score]:
    rng = random.Random(7)
    windows = {}
    for i in range(providers):
        pair = Pair(MODEL, f"provider-{i}")
        median = 0.3 + 0.05 * i
        samples = [
            Sample(MODEL, pair.provider, Outcome.OK,
                   median * rng.lognormvariate(0, 0.3) + (8.0 if rng.random() < 0.02 else 0),
                   now - 200 + k)
            for k in range(200)
        ]  # fmt: skip
        windows[pair] = samples
    if score_model is None:  # a tree from before posteriors (the "before" run)
        return {p: compute_score(p, s, policy.window_params(), now) for p, s in windows.items()}
    return score_model(windows, policy.window_params(), now, 7)


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _noop() -> None:
    return None


def timer_costs(number: int, repeat: int) -> dict[str, float]:
    """us per arm-and-disarm, best of `repeat` runs of `number`, inside one uvloop loop."""

    async def best(body: Callable[[], Awaitable[None]]) -> float:
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            await body()
            runs.append(time.perf_counter() - start)
        return min(runs) / number * 1e6

    async def measure() -> dict[str, float]:
        loop = asyncio.get_running_loop()

        async def asyncio_timeout() -> None:
            for _ in range(number):
                async with asyncio.timeout(30.0):  # noqa: ASYNC100 (its cost alone)
                    pass

        async def deadline() -> None:
            for _ in range(number):
                with Deadline(30.0):
                    pass

        async def call_later() -> None:
            for _ in range(number):
                loop.call_later(30.0, _noop).cancel()

        return {
            "asyncio.timeout(), not expiring": await best(asyncio_timeout),
            "timers.Deadline, not expiring": await best(deadline),
            "  loop.call_later() + cancel (inside both)": await best(call_later),
        }

    return uvloop.run(measure())


class Board:
    """The scoreboard as routing reads it: one snapshot, swapped whole."""

    def __init__(self, snapshot: Mapping[Pair, Score]) -> None:
        self.snapshot = snapshot


class NoPrices:
    def for_model(self, model: str) -> Mapping[str, PairPrice]:
        return {}


def routing_for(
    policy: ModelPolicy, scores: Mapping[Pair, Score], pairs: Mapping[str, str]
) -> tuple[Routing, Board]:
    """A routing component over `scores` (swap `board.snapshot` to rank anew)."""
    board = Board(scores)
    holder = PolicyHolder([], initial=PolicySet(default=policy))
    return Routing(holder, board, {MODEL: pairs}, NoPrices(), rng=random.Random(1)), board


def decision_setup(
    description: str,
) -> tuple[argparse.Namespace, float, ModelPolicy, Mapping[Pair, Score], dict[str, str]]:
    """The command line and one routing decision's inputs, shared with benchmarks/controls.py."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--providers", type=int, default=10)
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    now = time.time()
    policy = ModelPolicy()
    scores = MappingProxyType(scoreboard(args.providers, policy, now))
    pairs = {f"provider-{i}": f"org/model-{i}" for i in range(args.providers)}
    return args, now, policy, scores, pairs


def main() -> None:
    args, now, policy, scores, pairs = decision_setup(__doc__ or "")
    routing, board = routing_for(policy, scores, pairs)
    weighted, _ = routing_for(ModelPolicy(mode="weighted"), scores, pairs)
    request = RouteRequest(MODEL, now)
    fresh = dict(scores)

    def anew() -> object:
        board.snapshot = MappingProxyType(fresh)  # a new snapshot: ranked anew
        return routing.plan(request)

    def same() -> object:
        board.snapshot = scores
        return routing.plan(request)

    n = args.providers
    results = {
        f"Routing.plan, {n} providers, best, ranked anew": best_us(anew, args.number, args.repeat),
        f"Routing.plan, {n} providers, best, same snapshot": best_us(
            same, args.number, args.repeat),
        f"Routing.plan, {n} providers, weighted": best_us(
            lambda: weighted.plan(request), args.number, args.repeat),
        "  ranked anew + its reason text rendered (when read)": best_us(
            lambda: str(anew().reason), args.number, args.repeat),  # type: ignore[attr-defined]
    }  # fmt: skip

    metrics = Metrics()
    buffer = SampleBuffer(BufferConfig(max_items=10**9), MemoryStore(MemoryStoreConfig()))
    recorder = Recorder(buffer, routing, metrics, "bench")
    sample = Sample(MODEL, "provider-3", Outcome.OK, 0.42, now, ttfb_s=0.40, total_s=1.2)
    results["Recorder.sample (buffer + metrics)"] = best_us(
        lambda: recorder.sample(sample), args.number, args.repeat
    )
    results["  SampleBuffer.add_sample alone"] = best_us(
        lambda: buffer.add_sample(sample), args.number, args.repeat
    )
    results["  Metrics.record_sample alone"] = best_us(
        lambda: metrics.record_sample(sample), args.number, args.repeat
    )
    results.update(timer_costs(args.number, args.repeat))
    targets = {"Routing.plan": 50.0, "Recorder.sample": 10.0}
    for name, us in results.items():
        limit = next((v for k, v in targets.items() if name.startswith(k)), None)
        verdict = "" if limit is None else ("  ok" if us < limit else f"  OVER {limit:.0f} us")
        print(f"{name:<52}{us:8.2f} us/op{verdict}")


if __name__ == "__main__":
    main()
