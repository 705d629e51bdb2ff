"""The admin API (/admin, its own keys): scores, decisions, explain, policy, status, probes.

Read-only views of the scoreboard, decision log and policy, plus policy reload. Explain is
a dry run of the same `rank()` the request path uses (by the estimates, without a posterior
draw): it sends nothing and changes nothing. The figures OpenRouter publishes per endpoint
(learning.published) are computed when asked: `/admin/scores?published=true` and the report.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from proxy.api.context import Services, authenticate_admin, pairs_of
from proxy.api.dashboard import cookie_session
from proxy.api.published import spans_of
from proxy.core.domain import Candidate, Pair, empty_score
from proxy.core.errors import InvalidRequest, RateLimited, ServiceUnavailable
from proxy.learning.stats import cv_band, in_window
from proxy.learning.store.base import StoreUnavailable
from proxy.probing.prober import BudgetExhausted
from proxy.probing.status import prober_status

# Every admin route checks the dashboard's cookie first (async: revocations are in the
# store); `context.admin` then takes the key or that session.
router = APIRouter(prefix="/admin", dependencies=[Depends(cookie_session)])


@router.get("/scores")
async def scores(
    request: Request, model: str | None = None, published: bool = False
) -> dict[str, Any]:
    """Every pair's score; with `published`, its last 5 min / 30 min / day figures too."""
    svc = authenticate_admin(request)
    now = time.time()
    pairs = []
    for name, model_pairs in svc.pairs.items():
        if model is not None and name != model:
            continue
        policy = svc.policies.current.for_model(name)
        for provider, upstream_model in model_pairs.items():
            pair = Pair(name, provider)
            score = svc.scoreboard.snapshot.get(pair) or empty_score(pair)
            row = score.to_dict(now)
            row["upstream_model"] = upstream_model
            row["band"] = cv_band(score.cv, policy.cv_bands.tight, policy.cv_bands.variable)
            if published:
                row["published"] = {s.name: s.to_dict() for s in spans_of(svc, pair, now)}
            pairs.append(row)
    return {
        "replica": svc.replica,
        "scoreboard_age_s": svc.scoreboard.age_s(now),
        "store": _store_status(svc),
        "pairs": pairs,
    }


@router.get("/decisions")
async def decisions(
    request: Request,
    model: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
) -> dict[str, Any]:
    svc = authenticate_admin(request)
    _known(svc, model)
    try:
        rows = await svc.store.recent_decisions(model, limit)
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"the decision log is unreachable: {exc}") from exc
    rows = [r for r in rows if _configured(svc, r) and (model is None or r["model"] == model)]
    return {"decisions": rows, "count": len(rows)}


def _configured(svc: Services, row: Any) -> bool:
    """A decision about a configured model whose winner, candidates and attempts name its
    configured providers. The shared log holds whatever anyone who can write under the
    store's prefix put there (the Redis ACL of docs/redis.md limits who can)."""
    if not isinstance(row, dict) or row.get("model") not in svc.pairs:
        return False
    providers = set(svc.pairs[row["model"]])
    winner = row.get("winner")
    if winner is not None and winner not in providers:
        return False
    entries = (*(row.get("candidates") or ()), *(row.get("attempts") or ()))
    return all(isinstance(e, dict) and e.get("provider") in providers for e in entries)


@router.get("/explain")
async def explain(
    request: Request, model: str, prompt_tokens: int = Query(0, ge=0, le=10_000_000)
) -> dict[str, Any]:
    svc = authenticate_admin(request)
    _known(svc, model)
    policy = svc.policies.current.for_model(model)
    now = time.time()
    explained = svc.routing.explain(model, now, prompt_tokens)
    ranking = explained.ranking

    def row(c: Candidate) -> dict[str, Any]:
        return {
            "provider": c.provider,
            "upstream_model": c.upstream_model,
            "excluded_because": c.excluded_because,
            "band": cv_band(c.score.cv, policy.cv_bands.tight, policy.cv_bands.variable),
            "score": c.score.to_dict(now),
        }

    return {
        "model": model,
        "prompt_tokens": prompt_tokens,
        "would_choose": ranking.ranked[0].provider if ranking.ranked else None,
        "order": [c.provider for c in ranking.ranked],
        "reason": str(ranking.reason),
        "is_exploration": ranking.is_exploration,
        "incumbent": explained.incumbent,
        "candidates": [row(c) for c in (*ranking.ranked, *ranking.excluded)],
        "probed": explained.probed,
        "evidence_wanted": [
            {"provider": w.provider, "reason": w.reason, "chance": w.chance}
            for w in explained.evidence.wanted
        ],
        "out_of_contention": sorted(explained.evidence.settled),
        "policy": policy.model_dump(),
    }


@router.get("/policy")
async def policy(request: Request) -> dict[str, Any]:
    svc = authenticate_admin(request)
    return {
        **svc.policies.current.to_dict(),
        "last_reload_error": svc.policies.last_error,
        "last_reload_at": svc.policies.last_reload_at,
    }


@router.post("/policy/reload")
async def reload_policy(request: Request) -> dict[str, Any]:
    svc = authenticate_admin(request)
    error = svc.policies.reload()
    if error is not None:
        raise InvalidRequest(f"policy not reloaded, the last good one stays: {error}")
    return {"reloaded": True, **svc.policies.current.to_dict()}


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    svc = authenticate_admin(request)
    return {
        "replica": svc.replica,
        "store": _store_status(svc),
        "scoreboard_age_s": svc.scoreboard.age_s(),
        "scoreboard_last_refresh_cpu_s": svc.scoreboard.last_refresh_cpu_s,
        "policy_last_reload_error": svc.policies.last_error,
    }


@router.get("/prober")
async def prober(request: Request, model: str | None = None) -> dict[str, Any]:
    svc = authenticate_admin(request)
    _known(svc, model)
    await svc.prober.budget.read()
    return prober_status(svc.prober, time.time(), model)


@router.post("/probe")
async def probe(request: Request, model: str, provider: str) -> dict[str, Any]:
    """Probe one pair now (the scheduled probe's request) and return its sample."""
    svc = authenticate_admin(request)
    model_pairs = _known(svc, model)
    if provider not in model_pairs:
        known = ", ".join(model_pairs)
        raise InvalidRequest(
            f"provider '{provider}' does not serve model '{model}' (known: {known})",
            param="provider",
        )
    try:
        sample, error = await svc.prober.probe_now(Pair(model, provider))
    except BudgetExhausted as exc:
        wait = svc.prober.budget.frees_in_s() or 0.0
        raise RateLimited(f"probe refused: {exc}", retry_after_s=max(wait, 1.0)) from None
    return {"sample": sample.to_dict(), "error": error}


def _store_status(svc: Services) -> dict[str, Any]:
    health = svc.store.health()
    buffer = svc.buffer
    return {
        "backend": health.backend,
        "ok": health.ok,
        "detail": health.detail,
        "buffered_samples": len(buffer),
        "dropped_samples": buffer.dropped_samples,
        "dropped_decisions": buffer.dropped_decisions,
        "flushed_samples": buffer.flushed_samples,
        "last_flush_error": buffer.last_error,
    }


def _known(svc: Services, model: str | None) -> Mapping[str, str]:
    return {} if model is None else pairs_of(svc, model)


@router.get("/samples")
async def samples(
    request: Request,
    model: str,
    provider: str | None = None,
    limit: int = Query(500, ge=1, le=5000),
) -> dict[str, Any]:
    """The samples each pair's score is computed from now (its routing window), newest
    `limit`, with the cold-start threshold that splits them (the dashboard's charts)."""
    svc = authenticate_admin(request)
    model_pairs = _known(svc, model)
    if provider is not None and provider not in model_pairs:
        known = ", ".join(model_pairs)
        raise InvalidRequest(f"'{provider}' does not serve '{model}' (known: {known})",
                             param="provider")  # fmt: skip
    params = svc.policies.current.for_model(model).window_params()
    now = time.time()
    pairs = []
    for name in model_pairs:
        if provider is not None and name != provider:
            continue
        pair = Pair(model, name)
        recent = in_window(svc.scoreboard.window_samples(pair), params, now)[-limit:]
        score = svc.scoreboard.snapshot.get(pair)
        median = score.median if score is not None else None
        threshold = max(params.cold_factor * median, params.cold_floor_s) if median else None
        pairs.append({
            "model": model, "provider": name, "cold_threshold_s": threshold,
            "samples": [
                {"t": s.timestamp, "ttft_s": s.ttft_s, "censored_at_s": s.censored_at_s,
                 "source": s.source.value, "outcome": s.outcome.value,
                 "prompt_tokens": s.prompt_tokens, "tokens_per_s": s.tokens_per_s}
                for s in recent
            ],
        })  # fmt: skip
    return {"model": model, "pairs": pairs}


@router.get("/report")
async def report(
    request: Request,
    model: str | None = None,
    format: Literal["json", "markdown", "csv"] = "json",
    max_error_rate: float = Query(0.10, ge=0, le=1),
) -> Response:
    """The bench report's table (proxy.method.report) from the live routing windows: the same
    rows, verdicts and renderings as `ttft-router report`, figures as in /admin/scores."""
    from proxy.method.plan import PairSpec, judgement_from_policies
    from proxy.method.report import build_live_report, csv_text, live_json, live_markdown

    svc = authenticate_admin(request)
    _known(svc, model)
    models = [m for m in svc.pairs if model is None or m == model]
    policies = svc.policies.current
    judgement = judgement_from_policies(
        policies, models, policies.default.min_samples, max_error_rate
    )
    snapshot = svc.scoreboard.snapshot
    scores = [
        (PairSpec(m, provider, upstream), snapshot.get(Pair(m, provider)) or
         empty_score(Pair(m, provider)))
        for m in models
        for provider, upstream in svc.pairs[m].items()
    ]  # fmt: skip
    now = time.time()
    spans = {spec: spans_of(svc, spec.pair, now) for spec, _ in scores}
    live = build_live_report(scores, judgement, svc.replica, now, spans)
    if format == "markdown":
        return Response(live_markdown(live), media_type="text/markdown; charset=utf-8")
    if format == "csv":
        return Response(csv_text(live), media_type="text/csv; charset=utf-8")
    return Response(live_json(live), media_type="application/json")
