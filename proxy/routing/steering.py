"""Steering: a ranking shaped by a request's controls and the policy's own steering.

`steer()` shapes a ranking made by routing.ranking: it filters (only, ignore, max price) and
reorders (sort, the policy's cost objective, the performance preferences, order, affinity,
pin, the request's order) the measured order, and cuts the fallbacks when asked; it records
which controls shaped the route. Pure: no I/O, no clock; prices and the provider an
affinity key is bound to come in.
The controls themselves are parsed and checked against the policy at the HTTP surface
(api/controls.py). docs/request-controls.md and docs/cost.md tell the whole story.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proxy.core.domain import Candidate, LazyText
from proxy.routing.preferences import (
    Cutoffs,
    Preferences,
    describe,
    prefer,
    throughput_order,
    throughput_text,
)
from proxy.routing.ranking import OBJECTIVES, Ranking
from proxy.settings.policy import ModelPolicy
from proxy.settings.pricing import PairPrice

SORTS = ("latency", "price", "throughput")
PARTITIONS = ("model", "none")  # OpenRouter's; one model per request: both sort the same


@dataclass(frozen=True, slots=True)
class Controls:
    """One request's controls, as given (names checked against the model, not yet steered).
    `given`: the control names present, each with where it came from (body | header)."""

    order: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    allow_fallbacks: bool | None = None
    sort: str | None = None
    max_prompt: float | None = None
    max_completion: float | None = None
    affinity_key: str | None = None
    given: dict[str, str] = field(default_factory=dict)
    partition: str | None = None
    max_latency: Cutoffs | None = None  # preferred_max_latency (routing.preferences)
    min_throughput: Cutoffs | None = None  # preferred_min_throughput
    output_tokens: int | None = None  # the request's max_tokens (routing.total), if any

    @property
    def preferences(self) -> Preferences:
        return Preferences(self.max_latency, self.min_throughput, self.output_tokens)

    @property
    def places(self) -> bool:
        """The client chose or ordered the providers (any control but an affinity key, which
        keeps routing's own earlier choice, and allow_fallbacks): what such a request
        measures is kept apart (Source.STEERED, docs/security.md)."""
        return any(k not in UNPLACED for k in self.given)


UNPLACED = frozenset(("affinity", "allow_fallbacks"))


def steers(policy: ModelPolicy) -> bool:
    """Whether the policy shapes routes by itself (then every request is steered)."""
    return bool(
        policy.pin or policy.order or policy.max_price_per_million or policy.cost
        or policy.affinity.enabled
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Steered:
    """A ranking after the controls: what dispatch tries, what is out and why, what shaped it."""

    ranked: tuple[Candidate, ...]
    excluded: tuple[Candidate, ...]
    reason: LazyText
    shaped_by: list[str]
    bound: str | None = None  # the provider the affinity key is bound to, moved first


def steer(
    ranking: Ranking,
    controls: Controls | None,
    policy: ModelPolicy,
    prices: Mapping[str, PairPrice],
    bound: str | None = None,
) -> Steered:
    """Apply the controls to a ranking (which is not changed: its lists are shared).

    `bound`: the provider an affinity key is bound to (routing.affinity), moved first when
    it is among the ranked candidates (a ranked pair's circuit is not open, it is not
    excluded).
    Precedence of the orders, highest first: the request's `order`, the policy's `pin`,
    affinity, the policy's `order`, the performance preferences (soft: those that miss go
    last), `sort` (or the policy's cost objective), measurements.
    """
    c = controls or Controls()
    ranked, excluded = list(ranking.ranked), list(ranking.excluded)
    shaped: list[str] = []
    how = _Shaping(c, policy, prices, shaped, excluded)
    ranked = _filter(ranked, how)
    ranked = _sorted(ranked, how)
    prefs = c.preferences
    if prefs:
        ranked, tiers = prefer(ranked, prefs)
        shaped.append(describe(prefs, tiers))
    if policy.order:
        ranked = _to_front(ranked, policy.order)
        shaped.append(f"policy order {', '.join(policy.order)}")
    if bound is not None and any(x.provider == bound for x in ranked):
        ranked = _to_front(ranked, (bound,))
        shaped.append(f"bound by affinity to {bound}")
    else:
        bound = None
    if policy.pin:
        ranked = _to_front(ranked, (policy.pin,))
        shaped.append(f"policy pin {policy.pin}")
    if c.order:
        ranked = _to_front(ranked, c.order)
        shaped.append(f"provider.order {', '.join(c.order)} ({c.given['order']})")
    ranked = _fallbacks(ranked, how)
    base = ranking.reason
    if not ranked:
        text = LazyText(lambda: f"no provider left after the controls ({'; '.join(shaped)}): "
                                f"{_exclusions(excluded)}")  # fmt: skip
    elif shaped:
        first = ranked[0].provider
        text = LazyText(lambda: f"{first} by the controls ({'; '.join(shaped)}); measured: {base}")
    else:
        text = base
    return Steered(tuple(ranked), tuple(excluded), text, shaped, bound)


@dataclass(frozen=True, slots=True)
class _Shaping:
    """One steer call's inputs and what it reports: `shaped` (what shaped the ranking) and
    `excluded` (what the controls ruled out, and why) grow as the steps run."""

    c: Controls
    policy: ModelPolicy
    prices: Mapping[str, PairPrice]
    shaped: list[str]
    excluded: list[Candidate]


def _filter(ranked: list[Candidate], how: _Shaping) -> list[Candidate]:
    c, prices, excluded, shaped = how.c, how.prices, how.excluded, how.shaped
    limits = _limits(c, how.policy)
    if c.only is None and not c.ignore and limits is None:
        return ranked
    keep: list[Candidate] = []
    for x in ranked:
        why = _ruled_out(x.provider, c, limits, prices)
        if why is None:
            keep.append(x)
        else:
            excluded.append(Candidate(x.provider, x.upstream_model, x.score, why))
    if c.only is not None:
        shaped.append(f"provider.only {', '.join(c.only)} ({c.given['only']})")
    if c.ignore:
        shaped.append(f"provider.ignore {', '.join(c.ignore)} ({c.given['ignore']})")
    if limits is not None:
        shaped.append(f"max price {_limit_text(limits)} per million")
    return keep


def _limits(c: Controls, policy: ModelPolicy) -> tuple[float | None, float | None] | None:
    """The lower of the request's and the policy's price limits (prompt, completion)."""
    cap = policy.max_price_per_million
    prompt = _lower(c.max_prompt, cap.prompt if cap else None)
    completion = _lower(c.max_completion, cap.completion if cap else None)
    return None if prompt is None and completion is None else (prompt, completion)


def _lower(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _limit_text(limits: tuple[float | None, float | None]) -> str:
    named = zip(("prompt", "completion"), limits, strict=True)
    parts = [f"{n} {v:g}" for n, v in named if v is not None]
    return ", ".join(parts)


def _ruled_out(
    provider: str,
    c: Controls,
    limits: tuple[float | None, float | None] | None,
    prices: Mapping[str, PairPrice],
) -> str | None:
    if c.only is not None and provider not in c.only:
        return "not in the request's provider.only"
    if provider in c.ignore:
        return "ignored by the request (provider.ignore)"
    if limits is None:
        return None
    price = prices.get(provider)
    if price is None:
        return "price unknown, and a max price is set"
    prompt, completion = limits
    # The request's own limit only: this text reaches the client (a 503's message), and the
    # configured price is the operator's (docs/security.md).
    if prompt is not None and price.prompt_per_million > prompt:
        return f"over max price: prompt above {prompt:g} per million"
    if completion is not None and price.completion_per_million > completion:
        return f"over max price: completion above {completion:g} per million"
    return None


def _sorted(ranked: list[Candidate], how: _Shaping) -> list[Candidate]:
    c, policy, prices, shaped = how.c, how.policy, how.prices, how.shaped
    if c.sort == "price":
        shaped.append(f"provider.sort price ({c.given['sort']})")
        return sorted(ranked, key=lambda x: _unit_price(prices.get(x.provider)))
    if c.sort == "throughput":
        ranked = throughput_order(ranked)
        shaped.append(f"provider.sort throughput ({c.given['sort']}): "
                      f"{throughput_text(ranked, c.output_tokens)}")  # fmt: skip
        return ranked
    if c.sort is not None:
        shaped.append(f"provider.sort {c.sort} ({c.given['sort']})")
        return ranked
    if policy.cost is not None:
        return _cheapest_under_ceiling(ranked, how)
    return ranked


def _unit_price(price: PairPrice | None) -> float:
    """The order of `sort: price`: prompt plus completion per token, unknown last."""
    return float("inf") if price is None else price.prompt_usd + price.completion_usd


def _cheapest_under_ceiling(ranked: list[Candidate], how: _Shaping) -> list[Candidate]:
    """The cost objective: pairs whose estimated objective is at most the ceiling, cheapest
    first; then the rest in the measured order (so with none under it, the fastest)."""
    policy, prices, shaped = how.policy, how.prices, how.shaped
    assert policy.cost is not None
    ceiling = policy.cost.ceiling_s
    under = [x for x in ranked if _estimate(x, policy) <= ceiling]
    if not under:
        shaped.append(f"cost objective: no pair's {policy.objective} under {ceiling:g} s, "
                      "the fastest")  # fmt: skip
        return ranked
    under.sort(key=lambda x: _unit_price(prices.get(x.provider)))
    names = {x.provider for x in under}
    shaped.append(f"cost objective: cheapest with {policy.objective} under {ceiling:g} s")
    return under + [x for x in ranked if x.provider not in names]


def _estimate(x: Candidate, policy: ModelPolicy) -> float:
    """The pair's point estimate of the policy's objective; infinite when not measured."""
    belief = x.score.belief
    if belief is not None and belief.n_eff > 0.0:
        return belief.estimate
    value = getattr(x.score, OBJECTIVES[policy.objective], None)
    return float(value) if isinstance(value, int | float) else float("inf")


def _to_front(ranked: list[Candidate], first: Sequence[str]) -> list[Candidate]:
    """Those of `first` that are ranked, in that order, then the rest as they were."""
    by_name = {x.provider: x for x in ranked}
    head = [by_name[p] for p in first if p in by_name]
    names = {x.provider for x in head}
    return head + [x for x in ranked if x.provider not in names]


def _fallbacks(ranked: list[Candidate], how: _Shaping) -> list[Candidate]:
    """allow_fallbacks false (the request's, else the policy's): only the providers the
    request's order (or only), else the policy's pin or order, names; else the first."""
    c, policy, excluded, shaped = how.c, how.policy, how.excluded, how.shaped
    allow = c.allow_fallbacks if c.allow_fallbacks is not None else policy.allow_fallbacks
    if allow or not ranked:
        return ranked
    if c.order:
        named: Sequence[str] = c.order
    elif c.only is not None:
        named = c.only
    elif policy.pin:
        named = (policy.pin,)
    elif policy.order:
        named = policy.order
    else:
        named = (ranked[0].provider,)
    keep = [x for x in ranked if x.provider in named]
    for x in ranked:
        if x.provider not in named:
            excluded.append(Candidate(x.provider, x.upstream_model, x.score,
                                      "no fallbacks (allow_fallbacks: false)"))  # fmt: skip
    source = f" ({c.given['allow_fallbacks']})" if c.allow_fallbacks is not None else " (policy)"
    shaped.append(f"allow_fallbacks false{source}")
    return keep


def _exclusions(excluded: list[Candidate]) -> str:
    return "; ".join(f"{x.provider}: {x.excluded_because}" for x in excluded) or "none"
