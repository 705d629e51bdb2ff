"""Liveness, readiness and Prometheus metrics.

/readyz is 200 while this replica can route: "ready", or "degraded" when the store is
unreachable and it routes on local data. It is 503 only before the first scoreboard
refresh, or when the refresh loop has stalled while the store is fine.
"""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.api.context import services

router = APIRouter()


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
    body = {
        "status": status,
        "store": {"kind": health.kind, "ok": health.ok, "detail": health.detail},
        "scoreboard_age_s": age,
        "buffered_samples": len(svc.buffer),
        "dropped_samples": svc.buffer.dropped_samples,
    }
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    registry = services(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
