"""Request controls: a client's say in where its request goes, and the policy's own steering.

Clients speak OpenRouter's shape: a `provider` object in the request body (`order`, `only`,
`ignore`, `allow_fallbacks`, `sort`, `max_price`), or, for clients that cannot add body
fields, headers (`x-ttft-router-provider-only: a,b`, `-order`, `-ignore`,
`-allow-fallbacks`, `-sort`, `-max-price-prompt`, `-max-price-completion`) and an affinity
key (`x-ttft-router-affinity`, or the body's `user`). `parse()` takes the `provider` field
out of the already parsed body (it never goes upstream) and checks every control against the
model's policy: a control the policy does not let clients use, a provider the model does not
have or the policy rules out, or controls that contradict each other are an InvalidRequest
naming it. `steer()` then shapes a ranking made by proxy.routing.ranking: it filters (only, ignore,
max price) and reorders (sort, the policy's cost objective, order, affinity, pin, the
request's order) the measured order, and cuts the fallbacks when asked; it records which
controls shaped the route. Pure: no I/O, no clock; prices and the held provider come in.
docs/request-controls.md and docs/cost.md tell the whole story.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.core.domain import Candidate, LazyText
from proxy.core.errors import InvalidRequest
from proxy.routing.ranking import OBJECTIVES, Ranking
from proxy.settings.policy import ModelPolicy
from proxy.settings.pricing import PairPrice

BODY_FIELD = "provider"
HEADER_PREFIX = b"x-ttft-router-provider-"
AFFINITY_HEADER = b"x-ttft-router-affinity"
SORTS = ("latency", "price", "throughput")
BODY_KEYS = ("order", "only", "ignore", "allow_fallbacks", "sort", "max_price")
# header suffix -> (control, the body key it stands for)
HEADER_KEYS = {
    b"order": "order",
    b"only": "only",
    b"ignore": "ignore",
    b"allow-fallbacks": "allow_fallbacks",
    b"sort": "sort",
    b"max-price-prompt": "max_price.prompt",
    b"max-price-completion": "max_price.completion",
}
MAX_KEY_LENGTH = 256


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


def parse(
    body: dict[str, Any],
    headers: Sequence[tuple[bytes, bytes]],
    policy: ModelPolicy,
    providers: Sequence[str],
) -> Controls | None:
    """The request's controls, validated; None when it has none (the body's `provider`
    field, if any, is removed from `body`). Raises InvalidRequest naming the control."""
    raw = body.pop(BODY_FIELD, None)
    found: dict[str, Any] = {}
    given: dict[str, str] = {}
    if raw is not None:
        _from_body(raw, found, given)
    key: str | None = None
    for name, value in headers:
        if name.startswith(b"x-ttft-router-"):
            key = _from_header(name, value, found, given) or key
    if (
        key is None
        and policy.affinity.enabled
        and policy.affinity.from_user
        and (
            "affinity" in policy.client_controls  # else `user` is just OpenAI's field
        )
    ):
        user = body.get("user")
        if isinstance(user, str) and user:
            key, given["affinity"] = user[:MAX_KEY_LENGTH], "body user"
    if not given:
        return None
    controls = _build(found, key, given)
    _check(controls, policy, providers)
    return controls


def _from_body(raw: Any, found: dict[str, Any], given: dict[str, str]) -> None:
    if not isinstance(raw, dict):
        raise InvalidRequest("'provider' must be an object (OpenRouter's provider routing "
                             "fields)", param=BODY_FIELD)  # fmt: skip
    for name, value in raw.items():
        if name not in BODY_KEYS:
            raise InvalidRequest(
                f"provider.{name} is not supported (supported: {', '.join(BODY_KEYS)})",
                param=f"provider.{name}",
            )
        if value is None:
            continue
        if name == "max_price":
            _max_price(value, found)
        else:
            found[name] = value
        given[name] = "body"


def _max_price(value: Any, found: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise InvalidRequest("provider.max_price must be an object {prompt, completion} (USD "
                             "per million tokens)", param="provider.max_price")  # fmt: skip
    for part, limit in value.items():
        if part not in ("prompt", "completion"):
            raise InvalidRequest(
                f"provider.max_price.{part} is not supported (supported: prompt, completion)",
                param=f"provider.max_price.{part}",
            )
        found[f"max_price.{part}"] = limit


def _from_header(
    name: bytes, value: bytes, found: dict[str, Any], given: dict[str, str]
) -> str | None:
    """One x-ttft-router-* header into `found`; returns the affinity key if it is one."""
    text = value.decode("latin-1").strip()
    if name == AFFINITY_HEADER:
        given["affinity"] = "header"
        return text[:MAX_KEY_LENGTH] or None
    if not name.startswith(HEADER_PREFIX):
        return None  # another header of ours (x-ttft-router-...): not a control
    suffix = name[len(HEADER_PREFIX) :]
    key = HEADER_KEYS.get(suffix)
    header = name.decode("latin-1")
    if key is None:
        known = ", ".join(k.decode() for k in HEADER_KEYS)
        raise InvalidRequest(f"header {header} is not a request control (known suffixes: "
                             f"{known})", param=header)  # fmt: skip
    control = key.split(".", 1)[0]
    if given.get(control) == "body" or key in found:
        raise InvalidRequest(f"{header} contradicts provider.{key} in the body: give one",
                             param=header)  # fmt: skip
    found[key] = _header_value(key, text, header)
    given[control] = "header"
    return None


def _header_value(key: str, text: str, header: str) -> Any:
    if key in ("order", "only", "ignore"):
        return [p.strip() for p in text.split(",") if p.strip()]
    if key == "allow_fallbacks":
        if text.lower() not in ("true", "false"):
            raise InvalidRequest(f"{header} must be true or false", param=header)
        return text.lower() == "true"
    if key.startswith("max_price."):
        try:
            return float(text)
        except ValueError:
            raise InvalidRequest(f"{header} must be a number (USD per million tokens)",
                                 param=header) from None  # fmt: skip
    return text


def _names(found: dict[str, Any], key: str) -> tuple[str, ...]:
    value = found[key]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise InvalidRequest(f"provider.{key} must be a list of provider names",
                             param=f"provider.{key}")  # fmt: skip
    return tuple(dict.fromkeys(value))


def _price_limit(found: dict[str, Any], key: str) -> float | None:
    value = found.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidRequest(f"provider.{key} must be a number >= 0 (USD per million tokens)",
                             param=f"provider.{key}")  # fmt: skip
    return float(value)


def _build(found: dict[str, Any], key: str | None, given: dict[str, str]) -> Controls:
    fallbacks = found.get("allow_fallbacks")
    if fallbacks is not None and not isinstance(fallbacks, bool):
        raise InvalidRequest("provider.allow_fallbacks must be a boolean",
                             param="provider.allow_fallbacks")  # fmt: skip
    sort = found.get("sort")
    if sort is not None and sort not in SORTS:
        raise InvalidRequest(f"provider.sort must be one of {', '.join(SORTS)} (got {sort!r})",
                             param="provider.sort")  # fmt: skip
    return Controls(
        order=_names(found, "order") if "order" in found else (),
        only=_names(found, "only") if "only" in found else None,
        ignore=_names(found, "ignore") if "ignore" in found else (),
        allow_fallbacks=fallbacks,
        sort=sort,
        max_prompt=_price_limit(found, "max_price.prompt"),
        max_completion=_price_limit(found, "max_price.completion"),
        affinity_key=key,
        given=given,
    )


def _check(controls: Controls, policy: ModelPolicy, providers: Sequence[str]) -> None:
    """Raise InvalidRequest for a control the policy forbids, a provider the model lacks or
    the policy rules out, or controls that contradict each other."""
    for name in controls.given:
        if name not in policy.client_controls:
            allowed = ", ".join(policy.client_controls) or "none"
            where = str(AFFINITY_HEADER, "ascii") if name == "affinity" else f"provider.{name}"
            raise InvalidRequest(
                f"request control {where} is not allowed for this model by its policy "
                f"(allowed: {allowed})", param=where,
            )  # fmt: skip
    if controls.given.get("affinity") == "header" and not policy.affinity.enabled:
        raise InvalidRequest("x-ttft-router-affinity: affinity is off for this model (policy "
                             "affinity.enabled)", param="x-ttft-router-affinity")  # fmt: skip
    for name in ("order", "only", "ignore"):
        for p in getattr(controls, name) or ():
            if p not in providers:
                raise InvalidRequest(
                    f"provider.{name}: '{p}' is not a provider of this model (providers: "
                    f"{', '.join(providers)})", param=f"provider.{name}",
                )  # fmt: skip
            if name != "ignore" and not policy.is_usable(p):
                raise InvalidRequest(
                    f"provider.{name}: '{p}' is ruled out by the model's policy (exclude/allow)",
                    param=f"provider.{name}",
                )
    ignored = set(controls.ignore)
    for name in ("order", "only"):
        both = [p for p in getattr(controls, name) or () if p in ignored]
        if both:
            raise InvalidRequest(f"provider.{name} and provider.ignore both name "
                                 f"{', '.join(both)}", param=f"provider.{name}")  # fmt: skip
    if controls.only is not None:
        outside = [p for p in controls.order if p not in controls.only]
        if outside:
            raise InvalidRequest(f"provider.order names {', '.join(outside)}, which "
                                 "provider.only leaves out", param="provider.order")  # fmt: skip
        if not controls.only:
            raise InvalidRequest("provider.only is empty", param="provider.only")


# -- steering a ranking ----------------------------------------------------------------


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
    held: str | None = None  # the provider held for the affinity key


def steer(
    ranking: Ranking,
    controls: Controls | None,
    policy: ModelPolicy,
    prices: Mapping[str, PairPrice],
    held: str | None = None,
) -> Steered:
    """Apply the controls to a ranking (which is not changed: its lists are shared).

    `held`: the provider an affinity key is held on (proxy.routing.affinity), moved first when it is
    among the ranked candidates (a ranked pair's circuit is not open and it is not excluded).
    Precedence of the orders, highest first: the request's `order`, the policy's `pin`,
    affinity, the policy's `order`, `sort` (or the policy's cost objective), measurements.
    """
    c = controls or Controls()
    ranked, excluded = list(ranking.ranked), list(ranking.excluded)
    shaped: list[str] = []
    how = _Shaping(c, policy, prices, shaped, excluded)
    ranked = _filter(ranked, how)
    ranked = _sorted(ranked, how)
    if policy.order:
        ranked = _to_front(ranked, policy.order)
        shaped.append(f"policy order {', '.join(policy.order)}")
    if held is not None and any(x.provider == held for x in ranked):
        ranked = _to_front(ranked, (held,))
        shaped.append(f"held for affinity on {held}")
    else:
        held = None
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
    return Steered(tuple(ranked), tuple(excluded), text, shaped, held)


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
    if c.sort is not None:
        what = "" if c.sort == "latency" else ": throughput is not measured, ranked by TTFT"
        shaped.append(f"provider.sort {c.sort} ({c.given['sort']}){what}")
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
