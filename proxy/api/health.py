"""Liveness, readiness and Prometheus metrics, with the gauges of this replica's state
(scores, buffer, store, scoreboard age, probe budget) read at scrape time.

/readyz is 200 while this replica can route: "ready", or "degraded" when the store is
unreachable and it routes on local data. It is 503 only before the first scoreboard
refresh, or when the refresh loop has stalled while the store is fine. It says that word
and nothing else: where the store is and why it failed is /admin/status's (admin key).

/metrics (costs, traffic, every pair) needs the admin key, except on the admin listener
(`server.admin_listen`, reached only by operators) or when `server.public_metrics` is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.api.context import authenticate_admin, services
from proxy.core.domain import Score
from proxy.learning.decode import PERCENTILES
from proxy.telemetry.metrics import gauge

if TYPE_CHECKING:
    from proxy.learning.scoreboard import Scoreboard
    from proxy.learning.store.base import Store
    from proxy.learning.store.buffer import SampleBuffer
    from proxy.probing.prober import Prober

router = APIRouter()
# The ASGI scope key naming the listener a request came in on (proxy.server.Listener).
LISTENER = "ttft_router.listener"


@router.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    svc = services(request)
    age = svc.scoreboard.age_s(time.time())
    health = svc.store.health()
    stale_after = svc.config.scoreboard.stale_after_s
    if age is None:
        status, code = "starting", 503
    elif not health.ok:
        status, code = "degraded", 200
    elif age > stale_after:
        status, code = "stale", 503
    else:
        status, code = "ready", 200
    body = {"status": status}
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    svc = services(request)
    if not svc.config.server.public_metrics and request.scope.get(LISTENER) != "admin":
        authenticate_admin(request)  # 401/403 without an admin key
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class StateCollector(Collector):
    """Scores, buffer and store health, read when Prometheus scrapes."""

    def __init__(self, scoreboard: Scoreboard, buffer: SampleBuffer, store: Store) -> None:
        self._scoreboard = scoreboard
        self._buffer = buffer
        self._store = store

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        stats: dict[str, Callable[..., float | None]] = {
            "median": lambda s: s.median, "p95": lambda s: s.p95, "p99": lambda s: s.p99,
            "tail_mean": lambda s: s.tail_mean,
            "cv": lambda s: s.cv, "error_rate": lambda s: s.error_rate,
            "cold_share": lambda s: s.cold_share, "n": lambda s: float(s.n),
            "p75": lambda s: s.p75,
            **{f"throughput_{name}": _throughput(name) for name in PERCENTILES},
        }  # fmt: skip
        score = GaugeMetricFamily(
            "ttft_router_score",
            "Current score of each pair (seconds, ratios, counts; throughput_* in tokens/s)",
            labels=["model", "provider", "stat"],
        )  # fmt: skip
        for pair, s in self._scoreboard.snapshot.items():
            for name, read in stats.items():
                value = read(s)
                if value is not None:
                    score.add_metric([pair.model, pair.provider, name], value)
        yield score
        yield gauge("ttft_router_buffer_samples", "Samples waiting to be flushed",
                     len(self._buffer))  # fmt: skip
        health = self._store.health()
        yield gauge("ttft_router_store_up", "1 when the store is reachable", float(health.ok))
        age = self._scoreboard.age_s(now)
        yield gauge("ttft_router_scoreboard_age_seconds", "Seconds since the last refresh",
                     age if age is not None else float("nan"))  # fmt: skip


def _throughput(name: str) -> Callable[[Score], float | None]:
    """Reads a score's decode throughput percentile `name` (None: not measured)."""
    return lambda s: None if s.throughput is None else s.throughput.percentile(name)


class ProberCollector(Collector):
    """The probe budget left in the hour (the fleet's, or this replica's share while the store
    is down: `ttft_router_probe_budget_shared`), as last seen, and whether the prober is
    paused."""

    def __init__(self, prober: Prober) -> None:
        self._prober = prober

    def collect(self) -> Iterator[Metric]:
        probes, cost = self._prober.budget_left()
        left = GaugeMetricFamily(
            "ttft_router_probe_budget_left",
            "Probe budget left in the current hour (probes; estimated USD)", labels=["kind"],
        )  # fmt: skip
        left.add_metric(["probes"], float(probes))
        left.add_metric(["cost_usd"], cost)
        yield left
        yield gauge("ttft_router_probe_budget_shared",
                     "1: the fleet's budget in the store; 0: this replica's share (store down)",
                     float(self._prober.budget.shared))  # fmt: skip
        yield gauge("ttft_router_prober_paused", "1 while the prober is paused at its budget",
                     float(self._prober.paused_because is not None))  # fmt: skip
