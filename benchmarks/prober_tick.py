"""Milliseconds one prober tick spends on the event loop planning every pair (nothing sent).

A market of MODELS x PROVIDERS pairs (default 20 x 10 = 200), each with a window of
SAMPLES passive samples in the in-memory store, scored once; then the best of 5 runs of
--number ticks, with keep-warm off and on (on: the idle-to-cold time is learned for each
model's chosen pair).

    .venv/bin/python benchmarks/prober_tick.py
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import aiohttp

from proxy.app import build_services
from proxy.core.domain import Outcome, Sample, Source
from proxy.routing import RouteRequest
from proxy.settings.config import Config
from proxy.settings.policy import ModelPolicy, PolicyHolder, PolicySet


async def tick_ms(models: int, providers: int, samples: int, number: int, keep_warm: bool) -> float:
    provider_names = [f"p{i}" for i in range(providers)]
    config = Config.model_validate({
        "auth": {"allow_unauthenticated": True},
        "providers": {p: {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
                      for p in provider_names},
        "models": {f"m{j}": {"providers": dict.fromkeys(provider_names, "u")}
                   for j in range(models)},
        "prober": {"max_probes_per_hour": 0},  # plan only: every due probe is refused
    })  # fmt: skip
    policy = ModelPolicy.model_validate({"probe": {"keep_warm": {"enabled": keep_warm}}})
    rng = random.Random(0)
    async with aiohttp.ClientSession() as session:
        svc = build_services(config, PolicyHolder([], PolicySet(default=policy)), session)
        now = time.time()
        batch = [
            Sample(m, p, Outcome.OK, rng.random(), now - 3000 + k * 3000 / samples,
                   total_s=0.5, source=Source.PASSIVE)
            for m in config.models for p in provider_names for k in range(samples)
        ]  # fmt: skip
        await svc.store.append(batch, [])
        await svc.scoreboard.refresh()
        for model in config.models:  # each model's choice (keep-warm applies to it)
            svc.routing.plan(RouteRequest(model, now))
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(number):
                svc.prober.tick(time.time())
            best = min(best, (time.perf_counter() - start) / number)
        return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--providers", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--number", type=int, default=20)
    args = parser.parse_args()
    pairs = args.models * args.providers
    for keep_warm in (False, True):
        ms = asyncio.run(tick_ms(args.models, args.providers, args.samples, args.number, keep_warm))
        print(f"{pairs} pairs x {args.samples} samples, keep-warm {'on' if keep_warm else 'off'}:"
              f" {ms:.2f} ms per tick")  # fmt: skip


if __name__ == "__main__":
    main()
