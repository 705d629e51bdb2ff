"""One request's route: routing's ranking, shaped by the request's controls and the policy's
steering (proxy.routing.controls), with its affinity binding and its meter (proxy.serving.metering).

The /v1 surface calls `route_request` once per request, after the body is parsed. With no
control in the request and no steering in the policy, the ranking is used as it is: the
only cost is a look at the body's `provider` key and at the request's header names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.api.context import Services
from proxy.core.domain import Candidate, LazyText
from proxy.routing import controls
from proxy.serving.metering import Meter, UsageTap, asks_for_usage
from proxy.settings.policy import ModelPolicy


@dataclass(frozen=True, slots=True)
class Route:
    ranked: tuple[Candidate, ...]
    excluded: tuple[Candidate, ...]
    reason: LazyText
    kind: str
    shaped_by: list[str] | None
    meter: Meter | None
    bind: Callable[[str], None] | None
    # the ranking's candidates rendered once per flush (routing.Ranking.candidates): only
    # while the route's lists are the ranking's own
    candidates: Callable[[float], list[dict[str, Any]]] | None = None


def route_request(
    svc: Services,
    policy: ModelPolicy,
    model: str,
    deployments: Sequence[tuple[str, str]],
    body: dict[str, Any],
    headers: Sequence[tuple[bytes, bytes]],
    now: float,
    kind: str = "chat",
) -> Route:
    """Rank the model's pairs for this request. Raises InvalidRequest for a bad control."""
    given = controls.parse(body, headers, policy, [p for p, _ in deployments])
    ranking = svc.router.route(policy, deployments, svc.scoreboard.snapshot, model, now)
    prices = svc.pricing.for_model(model)
    # a chat stream's usage-only chunk is dropped when the client did not ask for it; a
    # Responses stream has none (its usage is in its last event, which every client gets)
    strip = kind != "responses" and not asks_for_usage(body)
    meter = Meter(prices, UsageTap(strip=strip)) if prices else None
    if given is None and not controls.steers(policy):
        return Route(ranking.ranked, ranking.excluded, ranking.reason, ranking.kind,
                     None, meter, None, ranking.candidates)  # fmt: skip
    key = given.affinity_key if given is not None and policy.affinity.enabled else None
    held = svc.affinity.held(model, key, now) if key is not None else None
    steered = controls.steer(ranking, given, policy, prices, held)
    bind = None
    if key is not None:
        bind = functools.partial(_bind, svc, model, key, now, policy)
    return Route(steered.ranked, steered.excluded, steered.reason, ranking.kind,
                 steered.shaped_by, meter, bind)  # fmt: skip


def _bind(
    svc: Services, model: str, key: str, now: float, policy: ModelPolicy, provider: str
) -> None:
    svc.affinity.bind(model, key, provider, now, policy.affinity)
