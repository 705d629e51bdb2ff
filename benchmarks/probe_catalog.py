"""Where the probe budget goes in a large catalog: MODELS x PROVIDERS pairs, client traffic on
USED of the models, the prober's planning (schedule.plan, unused_timing, priority, kept_share)
and its budget (probing.budget.ProbeBudget on the memory store) driven on a simulated clock,
one tick per TICK_S for HOURS. Nothing is sent: a fired probe is a sample at that instant,
costed at its estimate (the request body's size as prompt tokens: an upper bound).

What the simulation leaves out: routing's wishes (`uncertain`) and keep-warm / standby
(standby starts only once an idle-to-cold time is learned). A used model's first provider
gets a client request every TRAFFIC_S (so it is `skipped`: enough passive samples); its
other pairs are gap-probed. The used models' pairs start with a full window (the market ran
before); the unused models' pairs start empty (a catalog just configured). Between ticks a
pair is re-planned at its due time, when its window changes, and at least every minute (the
prober plans every pair every tick: the result is the same for these reasons).

Then, separately, three real Prober instances (build_services) share one Redis store and
probe a simulated market for two windows of a compressed hour (prober.time_scale): probes
sent in total against the cap.

    .venv/bin/python benchmarks/probe_catalog.py [--hours 24] [--used 20] [--no-fleet]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import logging
import math
import statistics
import uuid
from collections import deque
from dataclasses import dataclass, field

from proxy.core.domain import Outcome, Pair, Sample, Score, Source
from proxy.learning.stats import WindowParams, compute_score
from proxy.learning.store.memory import MemoryStore
from proxy.probing.budget import ProbeBudget, Refusal
from proxy.probing.prober import HOUR_S, READ_EVERY
from proxy.probing.runner import ProbeRunner
from proxy.probing.schedule import (
    GAP_SHARE,
    PairView,
    Plan,
    Reason,
    Timing,
    gap_stretch,
    is_bursting,
    kept_share,
    plan,
    priority,
    stretched,
    unused_timing,
)
from proxy.settings.config import MemoryStoreConfig, ProberConfig
from proxy.settings.policy import ModelPolicy
from proxy.upstream.measure import estimate_prompt_tokens

START = 1_800_000_000.0
TICK_S = 1.0
TRAFFIC_S = 30.0
RELOOK_S = 60.0
SETTLE_S = 2 * 3600.0
TYPICAL = (0.5, 1.5)  # USD per 1M prompt / completion tokens: a typical open-weight price


@dataclass
class SimPair:
    pair: Pair
    used: bool
    routed: bool  # gets the model's client traffic
    window: deque[Sample] = field(default_factory=deque)
    done: dict[str, str] = field(default_factory=dict)
    score: Score | None = None
    bursting: bool = True
    planned: Plan | None = None
    probes: list[float] = field(default_factory=list)


@dataclass
class Result:
    hours: float
    probes: int
    cost_usd: float
    used_probes: int
    unused_probes: int
    used_pairs_probed: int
    unused_pairs_probed: int
    unused_pairs: int
    used_max_gap_s: float  # the longest a used model's probed pair went without a probe
    used_max_gap_settled_s: float  # the same after the first SETTLE_S (the pace found)
    unused_min_slot_repeat: int  # most probes of one unused pair in one unused interval
    unused_age_max_s: float  # at the end: age of the newest sample of an unused pair
    unused_age_median_s: float
    unused_never: int
    used_gap_bound_s: float
    unused_interval_s: float
    pairs: list[SimPair]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def simulate(
    models: int = 500, providers: int = 4, used: int = 20, hours: float = 24.0,
    price: tuple[float, float] = TYPICAL, settings: ProberConfig | None = None,
) -> Result:  # fmt: skip
    settings = settings or ProberConfig()
    policy = ModelPolicy()
    params = policy.window_params()
    base = Timing.of(policy, 1.0)
    used_timing, pooled_timing = base, unused_timing(base, settings.unused_interval_s)
    clock = Clock(START)
    store = MemoryStore(MemoryStoreConfig(), budget_clock=clock)
    budget = ProbeBudget(settings, store, "sim", HOUR_S, str, clock)
    body = ProbeRunner.body("upstream-model", policy.probe)
    estimate = (
        estimate_prompt_tokens(len(body)) * price[0] + policy.probe.max_tokens * price[1]
    ) / 1e6

    pairs = [SimPair(Pair(f"m{m:03d}", f"p{p}"), m < used, m < used and p == 0)
             for m in range(models) for p in range(providers)]  # fmt: skip
    large = len(pairs) > settings.full_schedule_pairs
    unused_pairs = sum(not p.used for p in pairs)
    if large:
        budget.kept = kept_share(unused_pairs, settings.unused_interval_s, HOUR_S,
                                 settings.max_probes_per_hour, settings.unused_share)  # fmt: skip
    for sp in pairs:  # the used models' market ran before: full windows
        if sp.used:
            for i in range(policy.min_samples):
                sp.window.append(_sample(sp.pair, START - HOUR_S + i * 170.0, Source.PROBE))
            _rescore(sp, params, START)
    looks = [(START, i) for i in range(len(pairs))]
    heapq.heapify(looks)
    # due, not fired yet; by pooled (a model without traffic in a large catalog) or not
    waits: dict[bool, dict[int, tuple[tuple[int, float], Plan]]] = {False: {}, True: {}}
    cost = 0.0
    refused = False
    ticks = int(hours * HOUR_S / TICK_S)
    for step in range(ticks):
        now = START + step * TICK_S
        clock.now = now
        if step % int(TRAFFIC_S / TICK_S) == 0:
            for i, sp in enumerate(pairs):
                if sp.routed:
                    _add(sp, _sample(sp.pair, now, Source.PASSIVE), params, now)
                    heapq.heappush(looks, (now, i))
        if step % int(RELOOK_S / TICK_S) == 0:  # the budget's pace (the prober: every tick)
            used_timing, pooled_timing = _pace(pairs, large, budget.kept, settings, estimate)
        while looks and looks[0][0] <= now:
            _, i = heapq.heappop(looks)
            sp = pairs[i]
            pooled = large and not sp.used
            sp.planned = _plan(sp, pooled_timing if pooled else used_timing, pooled, policy, now)
            due = sp.planned.due
            waiting = waits[pooled]
            if due is not None and due <= now and sp.planned.slot is not None:
                waiting[i] = (priority(sp.planned.reason, sp.used, _newest(sp)), sp.planned)
                continue
            waiting.pop(i, None)
            relook = now + RELOOK_S
            heapq.heappush(looks, (min(due, relook) if due is not None else relook, i))
        age = budget.age_s()  # as the prober's loop: read while paused, and when it is old
        if age is None or refused or age >= budget.window_s * READ_EVERY:
            await budget.read()
        refused = False
        for pooled in (False, True):  # the used models' pairs first (unpooled: all of them)
            waiting = waits[pooled]
            refusal = budget.check(pooled, estimate) if waiting else None
            if not waiting or refusal is not None:
                refused = refused or (refusal is not None and refusal.pauses)
                continue
            for i in sorted(waiting, key=lambda j: waiting[j][0]):
                sp = pairs[i]
                refusal = budget.check(pooled, estimate)
                if refusal is not None:
                    refused = refused or refusal.pauses
                    break
                del waiting[i]
                planned = _plan(sp, pooled_timing if pooled else used_timing, pooled, policy, now)
                if planned.due is None or planned.due > now or planned.slot is None:
                    heapq.heappush(looks, (now + TICK_S, i))  # its slot has passed: plan again
                    continue
                spent = await budget.spend(sp.pair.model, pooled, estimate, held=False)
                if isinstance(spent, Refusal):
                    refused = refused or spent.pauses
                    waiting[i] = (priority(planned.reason, sp.used, _newest(sp)), planned)
                    break
                assert planned.slot is not None
                sp.done[planned.slot.rstrip("0123456789-")] = planned.slot
                sp.probes.append(now)
                cost += estimate
                _add(sp, _sample(sp.pair, now, Source.PROBE), params, now)
                heapq.heappush(looks, (now + TICK_S, i))
    return _result(pairs, hours, cost, used_timing, pooled_timing, START + ticks * TICK_S)


def _pace(pairs: list[SimPair], large: bool, kept: float, settings: ProberConfig,
          estimate: float) -> tuple[Timing, Timing]:  # fmt: skip
    """As Prober._pace: the gap intervals stretched to what the budget pays for."""
    base = Timing.of(ModelPolicy(), 1.0)
    gaps = [(3600.0 / base.interval_s, estimate) for sp in pairs
            if not (large and not sp.used) and sp.planned is not None
            and sp.planned.reason in (Reason.GAP, Reason.STALE)]  # fmt: skip
    unused = [(3600.0 / settings.unused_interval_s, estimate) for sp in pairs
              if large and not sp.used]  # fmt: skip
    caps = (settings.max_probes_per_hour, settings.max_cost_per_hour_usd)
    used_factor = gap_stretch(gaps, *caps, (1.0 - kept) * GAP_SHARE)
    unused_factor = gap_stretch(unused, *caps, settings.unused_share)
    every = settings.unused_interval_s * unused_factor
    return stretched(base, used_factor), unused_timing(base, every)


def _plan(sp: SimPair, timing: Timing, pooled: bool, policy: ModelPolicy, now: float) -> Plan:
    if not pooled:
        sp.bursting = is_bursting(sp.bursting, sp.score, policy.min_samples)
    view = PairView(score=sp.score, window=sp.window, bursting=sp.bursting and not pooled,
                    is_chosen=False, uncertain=None, idle_to_cold_s=None,
                    done=frozenset(sp.done.values()))  # fmt: skip
    return plan(sp.pair, timing, view, now)


def _newest(sp: SimPair) -> float | None:
    return sp.window[-1].timestamp if sp.window else None


def _sample(pair: Pair, now: float, source: Source) -> Sample:
    return Sample(pair.model, pair.provider, Outcome.OK, 0.5, now, total_s=0.6, source=source)


def _add(sp: SimPair, sample: Sample, params: WindowParams, now: float) -> None:
    sp.window.append(sample)
    while sp.window and sp.window[0].timestamp < now - HOUR_S:
        sp.window.popleft()
    _rescore(sp, params, now)


def _rescore(sp: SimPair, params: WindowParams, now: float) -> None:
    sp.score = compute_score(sp.pair, list(sp.window), params, now) if sp.window else None


def _result(pairs: list[SimPair], hours: float, cost: float, base: Timing, pooled: Timing,
            end: float) -> Result:  # fmt: skip
    probed_used = [sp for sp in pairs if sp.used and not sp.routed]
    unused = [sp for sp in pairs if not sp.used]
    gaps = [
        b - a
        for sp in probed_used
        for a, b in zip([START, *sp.probes], [*sp.probes, end], strict=True)
    ]
    settled = [
        b - a
        for sp in probed_used
        for a, b in zip([START, *sp.probes], [*sp.probes, end], strict=True)
        if a >= START + SETTLE_S
    ]
    repeat = 0
    for sp in unused:
        by_slot: dict[int, int] = {}
        for t in sp.probes:
            k = math.floor(t / pooled.interval_s)
            by_slot[k] = by_slot.get(k, 0) + 1
        repeat = max([repeat, *by_slot.values()])
    ages = [end - sp.window[-1].timestamp for sp in unused if sp.window]
    never = sum(not sp.probes for sp in unused)
    return Result(
        hours=hours, probes=sum(len(sp.probes) for sp in pairs), cost_usd=cost,
        used_probes=sum(len(sp.probes) for sp in pairs if sp.used),
        unused_probes=sum(len(sp.probes) for sp in unused),
        used_pairs_probed=sum(bool(sp.probes) for sp in pairs if sp.used),
        unused_pairs_probed=sum(bool(sp.probes) for sp in unused), unused_pairs=len(unused),
        used_max_gap_s=max(gaps, default=0.0), unused_min_slot_repeat=repeat,
        used_max_gap_settled_s=max(settled, default=0.0),
        unused_age_max_s=max(ages, default=math.inf),
        unused_age_median_s=statistics.median(ages) if ages else math.inf, unused_never=never,
        used_gap_bound_s=base.interval_s * (1 + base.jitter) + TICK_S,
        unused_interval_s=pooled.interval_s, pairs=pairs,
    )  # fmt: skip


def report(name: str, r: Result) -> None:
    per_hour = r.probes / r.hours
    print(f"{name}: {per_hour:.0f} probes/hour ({r.probes} in {r.hours:g} h), "
          f"${r.cost_usd / r.hours * 24:.2f}/day (estimates)")  # fmt: skip
    print(f"  used models' pairs: {r.used_probes} probes, {r.used_pairs_probed} pairs probed; "
          f"longest unprobed gap of a non-routed pair {r.used_max_gap_s:.0f} s, after the "
          f"first {SETTLE_S / 3600:g} h {r.used_max_gap_settled_s:.0f} s (the paced schedule: "
          f"<= {r.used_gap_bound_s:.0f} s)")  # fmt: skip
    print(f"  unused models' pairs: {r.unused_probes} probes, {r.unused_pairs_probed} of "
          f"{r.unused_pairs} pairs probed, never: {r.unused_never}; at most "
          f"{r.unused_min_slot_repeat} per {r.unused_interval_s / 3600:g} h interval; newest "
          f"sample age at the end max {r.unused_age_max_s / 3600:.1f} h, median "
          f"{r.unused_age_median_s / 3600:.1f} h")  # fmt: skip


async def fleet(cap: int, windows: float, time_scale: float) -> None:
    """Three Prober instances (build_services) on one Redis, a simulated market of 2 models
    x 4 providers (bursting: far more due than the cap), for `windows` compressed hours."""
    import aiohttp

    from proxy.app import build_services
    from proxy.settings.config import Config
    from proxy.settings.policy import PolicyHolder, PolicySet
    from proxy.simulator import Market
    from tests.e2e.conftest import scenario

    fast = {"warm_ttft": {"median_s": 0.2, "sigma": 0.1}, "tokens_per_s": 5000}
    names = ["alpha", "beta", "gamma", "delta"]
    market = Market(scenario({p: {f"x-{p}": fast, f"y-{p}": fast} for p in names},
                             time_scale=time_scale))  # fmt: skip
    prefix = f"bench-fleet-{uuid.uuid4().hex[:8]}"
    async with market as sim, aiohttp.ClientSession() as session:
        built = []
        for i in range(3):
            config = Config.model_validate({
                "server": {"replica_id": f"r{i}"}, "auth": {"allow_unauthenticated": True},
                "providers": sim.provider_configs(),
                "models": {m: {"providers": {p: f"{m[0]}-{p}" for p in names}}
                           for m in ("xm", "ym")},
                "store": {"kind": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": prefix},
                "prober": {"time_scale": time_scale, "max_probes_per_hour": cap},
            })  # fmt: skip
            policy = PolicySet(default=ModelPolicy.model_validate({"min_samples": 100}))
            svc = build_services(config, PolicyHolder([], initial=policy), session)
            await svc.store.start()
            built.append(svc)
        stop = asyncio.Event()
        runs = [asyncio.create_task(svc.prober.run(stop)) for svc in built]
        await asyncio.sleep(windows * HOUR_S * time_scale)
        stop.set()
        await asyncio.gather(*runs)
        sent = sum(sim.stats(p)["requests"] for p in names)
        per_replica = [sum(s.probes for s in svc.prober.states.values()) for svc in built]
        modes = {svc.prober.budget.shared for svc in built}
        for svc in built:
            await svc.store.close()
    print(
        f"3 replicas, one Redis, cap {cap} probes per (compressed) hour, {windows:g} hours "
        f"at time_scale {time_scale:g}: {sent} probes sent ({per_replica} by replica), "
        f"cap x hours = {cap * windows:g}; fleet budget on every replica: {modes == {True}}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--providers", type=int, default=4)
    parser.add_argument("--used", type=int, default=20)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--no-fleet", action="store_true")
    args = parser.parse_args()
    logging.getLogger("ttft_router").setLevel(logging.ERROR)  # the pauses at the cap: expected
    unknown = ProberConfig().unknown_price
    prices = {
        f"typical price {TYPICAL[0]}/{TYPICAL[1]} USD per 1M": TYPICAL,
        f"unknown_price {unknown.prompt_per_million:g}/{unknown.completion_per_million:g} USD "
        "per 1M": (unknown.prompt_per_million, unknown.completion_per_million),
    }
    print(f"{args.models} models x {args.providers} providers, client traffic on {args.used} "
          f"models, default prober budget, {args.hours:g} simulated hours, "
          f"tick {TICK_S:g} s")  # fmt: skip
    for name, price in prices.items():
        report(name, await simulate(args.models, args.providers, args.used, args.hours, price))
    if not args.no_fleet:
        await fleet(cap=30, windows=2.0, time_scale=0.002)


if __name__ == "__main__":
    asyncio.run(main())
