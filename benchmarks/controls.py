"""Microseconds per request of request controls (proxy.api.controls parses them,
proxy.routing.steering applies them), beside the routing call they follow (Routing.plan,
10 proven providers, the same snapshot as benchmarks/micro.py).

    no controls         what every request pays: the body's `provider` key looked up, the
                        header names scanned (10 ordinary headers), the policy checked for
                        steering (`steering.steers`)
    body controls       parse + validate `{"only": [5 providers], "sort": "price"}` and
                        steer the ranking (filter, sort by price)
    header controls     the same as headers
    policy steering     no request controls, a policy with `pin` and `order`: steer only
    preferences         parse + validate `{"sort": "throughput", "preferred_min_throughput":
                        {"p50": .., "p90": ..}, "preferred_max_latency": ..}` and steer (sort
                        by decode throughput, three tiers, the reason quoting expected totals)

timeit-style: the best of --repeat runs of --number calls.

    .venv/bin/python benchmarks/controls.py
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from proxy.api import controls
from proxy.core.domain import Throughput
from proxy.routing import RouteRequest
from proxy.routing.ranking import ModelView, rank
from proxy.routing.steering import steer, steers
from proxy.settings.auth import CLIENT_CONTROLS
from proxy.settings.policy import ModelPolicy
from proxy.settings.pricing import PairPrice

try:
    from benchmarks.micro import MODEL, best_us, decision_setup, routing_for
except ImportError:  # run as a script from the repository root
    from micro import MODEL, best_us, decision_setup, routing_for  # type: ignore[no-redef]

HEADERS = [
    (b"host", b"127.0.0.1:8080"), (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"), (b"connection", b"keep-alive"),
    (b"user-agent", b"AsyncOpenAI/Python 1.99.0"), (b"content-type", b"application/json"),
    (b"authorization", b"Bearer sk-xxxxxxxxxxxxxxxxxxxxxxxx"), (b"x-stainless-lang", b"python"),
    (b"x-stainless-retry-count", b"0"), (b"content-length", b"120"),
]  # fmt: skip


def main() -> None:
    args, now, policy, scores, pairs = decision_setup(__doc__ or "")
    names = list(pairs)
    prices = {p: PairPrice((i + 1) * 1e-7, (i + 1) * 3e-7, "config") for i, p in enumerate(names)}
    routing, _ = routing_for(policy, scores, pairs)
    ranking = rank(ModelView(policy, MODEL, pairs, scores, now), random.Random(1))
    body: dict[str, Any] = {"model": MODEL, "messages": [], "stream": True}
    only = names[::2]

    def none() -> object:
        given = controls.parse(body, HEADERS, policy, names, CLIENT_CONTROLS)
        return given is None and not steers(policy)

    def with_body() -> object:
        request = {**body, "provider": {"only": only, "sort": "price"}}
        given = controls.parse(request, HEADERS, policy, names, CLIENT_CONTROLS)
        return steer(ranking, given, policy, prices)

    header_form = [*HEADERS, (b"x-ttft-router-provider-only", ",".join(only).encode()),
                   (b"x-ttft-router-provider-sort", b"price")]  # fmt: skip

    def with_headers() -> object:
        given = controls.parse(body, header_form, policy, names, CLIENT_CONTROLS)
        return steer(ranking, given, policy, prices)

    pinned = ModelPolicy(pin=names[3], order=[names[5], names[1]])

    def steering() -> object:
        return steer(ranking, None, pinned, prices)

    rates = {pair: replace(score, throughput=Throughput(50, 20.0 * (i + 1), 18.0 * (i + 1),
                                                        15.0 * (i + 1), 9.0 * (i + 1), 200.0))
             for i, (pair, score) in enumerate(scores.items())}  # fmt: skip
    measured = rank(ModelView(policy, MODEL, pairs, rates, now), random.Random(1))
    prefs = {"sort": "throughput", "preferred_min_throughput": {"p50": 90, "p90": 60},
             "preferred_max_latency": 5.0}  # fmt: skip

    def preferences() -> object:
        given = controls.parse({**body, "max_tokens": 256, "provider": prefs}, HEADERS, policy,
                               names)  # fmt: skip
        return steer(measured, given, policy, prices)

    n, r = args.number, args.repeat
    results = {
        f"Routing.plan, {args.providers} providers (for scale)": best_us(
            lambda: routing.plan(RouteRequest(MODEL, now)), n, r),
        "no controls (every request)": best_us(none, n, r),
        "body controls: parse + steer (only, sort price)": best_us(with_body, n, r),
        "header controls: parse + steer (only, sort price)": best_us(with_headers, n, r),
        "policy steering (pin + order): steer": best_us(steering, n, r),
        "preferences + sort throughput: parse + steer": best_us(preferences, n, r),
    }  # fmt: skip
    for name, us in results.items():
        print(f"{name:<52}{us:8.2f} us/op")


if __name__ == "__main__":
    main()
