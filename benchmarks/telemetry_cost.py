"""Microseconds per request of what request ids and decision counters add to the hot path.

    from_headers     finding (or making) the request id among a typical SDK request's headers
    contextvar       setting and resetting the request's context variable
    count_decision   the decision counter (+ its kind) for a steady ranking, whose reason text
                     is rendered once and shared (it is rendered for the decision log anyway)

timeit-style: the best of 5 runs of --number calls.

    .venv/bin/python benchmarks/telemetry_cost.py
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from proxy.core import requestid
from proxy.core.domain import Attempt, Candidate, Decision, LazyText, Outcome, Pair, empty_score
from proxy.telemetry.metrics import Metrics

HEADERS = [
    (b"host", b"127.0.0.1:8080"), (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"), (b"accept", b"application/json"),
    (b"content-type", b"application/json"), (b"user-agent", b"OpenAI/Python 1.99"),
    (b"x-stainless-lang", b"python"), (b"authorization", b"Bearer k"),
    (b"content-length", b"120"),
]  # fmt: skip


def best_us(call: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    number = parser.parse_args().number
    with_id = [*HEADERS, (b"x-request-id", b"client-req.42")]
    none = best_us(lambda: requestid.from_headers(HEADERS), number)
    sent = best_us(lambda: requestid.from_headers(with_id), number)
    print(f"from_headers, none sent: {none:.2f} us")
    print(f"from_headers, client's:  {sent:.2f} us")

    def set_reset() -> None:
        requestid.REQUEST_ID.reset(requestid.REQUEST_ID.set("x"))

    print(f"contextvar set + reset:  {best_us(set_reset, number):.2f} us")
    metrics = Metrics()
    reason = LazyText(lambda: "a has the lowest tail mean among 3 proven pairs: ...")
    ranked = (Candidate("a", "model-a", empty_score(Pair("m", "a"))),)

    def decision() -> Decision:
        return Decision("1", "m", 0.0, ranked, (), reason, [Attempt("a", Outcome.OK)], "a")

    base = best_us(decision, number)
    counted = best_us(lambda: metrics.count_decision(decision()), number)
    print(f"count_decision:          {counted - base:.2f} us")


if __name__ == "__main__":
    main()
