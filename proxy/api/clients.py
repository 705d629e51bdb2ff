"""The admin API's view of the clients (/admin/clients, its own keys): per client its limits,
budget and permissions as configured, its use of them across every replica (from the store)
and on this replica, and when it was last seen; and reloading them from the config file.
Never a key, nor a key's digest."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from proxy.api.context import authenticate_admin
from proxy.api.dashboard import cookie_session
from proxy.clients import Client, ClientStats
from proxy.core.errors import InvalidRequest
from proxy.learning.store.base import ClientLimits, ClientUse, StoreUnavailable
from proxy.settings.auth import ANONYMOUS

router = APIRouter(prefix="/admin", dependencies=[Depends(cookie_session)])


@router.get("/clients")
async def clients(request: Request) -> dict[str, Any]:
    svc = authenticate_admin(request)
    registry, gate = svc.clients.current, svc.gate
    now = time.time()
    day, month = gate.period_names(now)
    listed = registry.clients()
    error = None
    try:
        uses = await svc.store.client_use([c.name for c in listed], ClientLimits(), day, month)
    except StoreUnavailable as exc:
        uses, error = {}, str(exc)
    return {
        "replica": svc.replica,
        "store": svc.store.backend,
        "store_error": error,
        "counted_locally": gate.is_local,
        "fallback_share": svc.config.auth.fallback_share,
        "queued_charges": gate.queued,
        "dropped_charges": gate.dropped_charges,
        "charge_batches": gate.charge_batches,
        "carried_charges": gate.carried_charges,
        "day": day,
        "month": month,
        "reload": {
            "last_error": svc.clients.last_error,
            "last_reload_at": svc.clients.last_reload_at,
        },
        "clients": [_row(c, uses.get(c.name), gate.stats.get(c.name)) for c in listed],
    }


@router.post("/clients/reload")
async def reload_clients(request: Request) -> dict[str, Any]:
    """Read the config file's `auth` again now (it is also reloaded when the file changes)."""
    svc = authenticate_admin(request)
    error = svc.clients.reload()
    if error is not None:
        raise InvalidRequest(f"clients not reloaded, the last good ones stay: {error}")
    return {"reloaded": True, "clients": sorted(svc.clients.current.by_name)}


def _row(client: Client, use: ClientUse | None, stats: ClientStats | None) -> dict[str, Any]:
    rules = client.rules
    return {
        "name": client.name,
        "anonymous": client.name == ANONYMOUS,
        "limits": rules.limits.model_dump(),
        "budget": rules.budget.model_dump(),
        "models": sorted(client.models) if client.models is not None else None,
        "controls": sorted(client.controls),
        "max_tokens": client.max_tokens,
        "max_n": client.max_n,
        "usage": _usage(use, counted=client.limits is not None),
        "spend": _spend(client, use),
        "last_seen": use.last_seen if use is not None else None,
        "this_replica": _stats(stats),
    }


def _usage(use: ClientUse | None, counted: bool) -> dict[str, Any] | None:
    """The client's use; the last minute's figures only for a client whose requests the
    store admits (one with limits or a budget: the others are counted by the day)."""
    if use is None:
        return None
    minute = (use.requests, use.tokens, use.concurrent) if counted else (None, None, None)
    return {
        "requests_last_minute": minute[0], "tokens_last_minute": minute[1],
        "concurrent": minute[2], "requests_today": use.requests_day,
        "tokens_today": use.tokens_day, "refused_today": use.refused_day,
        "requests_this_month": use.requests_month, "tokens_this_month": use.tokens_month,
    }  # fmt: skip


def _spend(client: Client, use: ClientUse | None) -> dict[str, Any] | None:
    if use is None:
        return None
    budget = client.rules.budget

    def left(cap: float | None, spent: float) -> float | None:
        return None if cap is None else max(0.0, cap - spent)

    return {
        "usd_today": use.usd_day, "usd_this_month": use.usd_month,
        "usd_left_today": left(budget.usd_per_day, use.usd_day),
        "usd_left_this_month": left(budget.usd_per_month, use.usd_month),
    }  # fmt: skip


def _stats(stats: ClientStats | None) -> dict[str, Any]:
    stats = stats or ClientStats()
    return {"requests": stats.requests, "refused": dict(stats.refused), "tokens": stats.tokens,
            "usd": stats.usd, "last_seen": stats.last_seen}  # fmt: skip
