"""What /admin/prober shows of a replica's prober: its budget (the fleet's or its local
share), the demand (models with and without traffic), coordination and every pair's plan,
last probe, cost and keep-warm figures, as plain data. Reads the prober; changes nothing."""

from __future__ import annotations

from typing import Any

from proxy.core.domain import Pair
from proxy.probing.prober import PairState, Prober
from proxy.probing.schedule import Reason, Timing, keep_warm_spacing


def prober_status(prober: Prober, now: float, model: str | None = None) -> dict[str, Any]:
    """The caller refreshes the budget's use first (`await prober.budget.read()`)."""
    return {
        "replica": prober.replica,
        "enabled": prober.settings.enabled,
        "time_scale": prober.time_scale,
        "coordination": _coordination(prober),
        "budget": _budget(prober, now),
        "demand": _demand(prober),
        "in_flight": len(prober.tasks),
        "pairs": [
            _pair_status(prober, pair, state, now)
            for pair, state in prober.states.items()
            if model is None or pair.model == model
        ],
    }


def _budget(prober: Prober, now: float) -> dict[str, Any]:
    budget = prober.budget
    probes, cost = budget.used()
    max_probes, max_cost = budget.caps(budget.shared)
    share_probes, share_cost = budget.caps(False)
    frees_in = budget.frees_in_s()
    resumes = now + (frees_in or 0.0) if prober.paused_because else None
    backend = prober.store.backend
    if budget.shared:
        mode = "fleet" if backend != "memory" else "fleet (memory store: this process)"
        why = f"one budget for every replica sharing the {backend} store"
    else:
        mode = "local share"
        why = f"store unavailable: {budget.why_local}"
    return {
        "mode": mode,
        "shared": budget.shared,
        "why": why,
        "window_s": budget.window_s,
        "max_probes": max_probes,
        "used_probes": probes,
        "max_cost_usd": max_cost,
        "used_cost_usd": round(cost, 9),
        "frees_in_s": None if frees_in is None else round(frees_in, 6),
        "fleet": {"max_probes": budget.max_probes, "max_cost_usd": budget.max_cost_usd},
        "local_share": {
            "expected_replicas": budget.expected_replicas, "max_probes": share_probes,
            "max_cost_usd": share_cost,
        },
        "kept_for_unused": round(budget.kept, 6),
        "paused": prober.paused_because is not None,
        "paused_because": prober.paused_because,
        "resumes_at": resumes,
    }  # fmt: skip


def _demand(prober: Prober) -> dict[str, Any]:
    settings = prober.settings
    models = {pair.model for pair in prober.states}
    used = prober.used_models & models
    return {
        "large_catalog": prober.large_catalog,
        "full_schedule_pairs": settings.full_schedule_pairs,
        "used_models": len(used),
        "unused_models": len(models - used),
        "used_within_s": settings.used_within_s * prober.time_scale,
        "unused_interval_s": settings.unused_interval_s * prober.time_scale,
        "unused_share": settings.unused_share,
        "gap_stretch": prober.gap_stretch,
        "unused_stretch": prober.unused_stretch,
    }


def _coordination(prober: Prober) -> dict[str, Any]:
    if prober.coordination_error is not None:
        return {"ok": False, "mode": "local: this replica's own schedule within its budget",
                "detail": prober.coordination_error}  # fmt: skip
    backend = prober.store.backend
    shared = "" if backend != "memory" else " (this process)"
    return {"ok": True, "mode": f"leases in the {backend} store{shared}", "detail": None}


def _pair_status(prober: Prober, pair: Pair, state: PairState, now: float) -> dict[str, Any]:
    planned = prober.plan_of(pair, now)
    policy = prober.policy(pair.model)
    learned = prober.idle_to_cold_s(pair, policy)
    timing = Timing.of(policy, prober.time_scale)
    price, own = prober.pricing.for_budget(pair)
    last = state.last
    return {
        "model": pair.model,
        "provider": pair.provider,
        "reason": planned.reason.value,
        "detail": planned.detail,
        "next_due": planned.due,
        "next_due_in_s": None if planned.due is None else round(planned.due - now, 6),
        "slot": planned.slot,
        "used": pair.model in prober.used_models,
        "pooled": state.pooled,
        "in_flight": state.in_flight,
        "lease_holder": state.lease_holder,
        "last_probe": None if last is None else {
            **last.to_dict(), "reason": state.last_reason, "error": state.last_error,
        },
        "probes": state.probes,
        "cost_usd": round(state.cost_usd, 9),
        "price_per_1m_usd": {
            "prompt": price.prompt_per_million, "completion": price.completion_per_million,
            "from": price.source if own else "unknown (config prober.unknown_price)",
        },
        "keep_warm": {
            "enabled": timing.keep_warm,
            "standby_enabled": timing.standby,
            "is_chosen": prober.is_chosen(pair),
            "is_standby": planned.reason is Reason.STANDBY,
            "idle_to_cold_s": learned,
            "spacing_s": keep_warm_spacing(timing, learned),
        },
    }  # fmt: skip
