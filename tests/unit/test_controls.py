"""Request controls (proxy.routing.controls): parsing the body's `provider` object and the header
form, validation against the model's policy, and how the controls and the policy's steering
order the candidates routing ranked."""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from proxy.api.controls import parse
from proxy.core.domain import Pair, Throughput
from proxy.core.errors import ConfigError, InvalidRequest, PermissionDenied
from proxy.routing.preferences import Cutoffs
from proxy.routing.ranking import ModelView, Ranking, rank
from proxy.routing.steering import Controls, steer, steers
from proxy.settings.auth import CLIENT_CONTROLS
from proxy.settings.policy import ModelPolicy, load_policies
from proxy.settings.pricing import PairPrice
from tests.unit.test_routing import NOW, board

PROVIDERS = ["a", "b", "c"]
DEPLOYMENTS = [("a", "model-a"), ("b", "model-b"), ("c", "model-c")]
# a fastest, then b, then c; c cheapest, then b, then a
SCORES = board(a=[0.1] * 30, b=[0.2] * 30, c=[0.4] * 30)
PRICES = {
    "a": PairPrice(3e-6, 9e-6, "config"),
    "b": PairPrice(2e-6, 6e-6, "config"),
    "c": PairPrice(1e-6, 2e-6, "config"),
}


def policy(**kw: Any) -> ModelPolicy:
    return ModelPolicy.model_validate({"exploration_share": 0.0, **kw})


def measured(pol: ModelPolicy) -> Ranking:
    return rank(ModelView(pol, "m", dict(DEPLOYMENTS), SCORES, NOW), random.Random(1))


def order_of(pol: ModelPolicy, controls: Controls | None = None, bound: str | None = None,
             prices: dict[str, PairPrice] | None = None) -> list[str]:  # fmt: skip
    steered = steer(measured(pol), controls, pol, PRICES if prices is None else prices, bound)
    return [c.provider for c in steered.ranked]


def parsed(provider: Any = None, headers: dict[str, str] | None = None,
           pol: ModelPolicy | None = None, allowed: Collection[str] = CLIENT_CONTROLS,
           **body: Any) -> Controls | None:  # fmt: skip
    """The controls of a request with `provider` and `headers` (and `body` fields), whose
    client may use `allowed` (default: all of them)."""
    full: dict[str, Any] = {"model": "m", "messages": [], **body}
    if provider is not None:
        full["provider"] = provider
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    controls = parse(full, raw, pol or policy(), PROVIDERS, allowed)
    assert "provider" not in full  # never goes upstream
    return controls


def rejected(match: str, provider: Any = None, headers: dict[str, str] | None = None,
             pol: ModelPolicy | None = None) -> InvalidRequest:  # fmt: skip
    with pytest.raises(InvalidRequest, match=match) as info:
        parsed(provider, headers, pol)
    return info.value


def forbidden(match: str, provider: Any = None, headers: dict[str, str] | None = None,
              allowed: Collection[str] = ()) -> PermissionDenied:  # fmt: skip
    with pytest.raises(PermissionDenied, match=match) as info:
        parsed(provider, headers, policy(affinity={"enabled": True}), allowed)
    return info.value


# -- parsing -------------------------------------------------------------------------


def test_no_controls_is_none_and_other_headers_are_ignored() -> None:
    assert parsed(headers={"authorization": "Bearer x", "x-request-id": "r"}) is None
    assert parsed(user="someone") is None  # affinity is off by default


def test_body_and_header_forms_mean_the_same() -> None:
    body = parsed({"only": ["b", "c"], "order": ["c"], "allow_fallbacks": False,
                   "sort": "price", "max_price": {"prompt": 2, "completion": 7}})  # fmt: skip
    header = parsed(headers={
        "x-ttft-router-provider-only": "b, c", "x-ttft-router-provider-order": "c",
        "x-ttft-router-provider-allow-fallbacks": "false", "x-ttft-router-provider-sort": "price",
        "x-ttft-router-provider-max-price-prompt": "2",
        "x-ttft-router-provider-max-price-completion": "7",
    })  # fmt: skip
    assert body is not None and header is not None
    for name in ("order", "only", "allow_fallbacks", "sort", "max_prompt", "max_completion"):
        assert getattr(body, name) == getattr(header, name), name
    assert body.only == ("b", "c") and body.max_completion == 7.0
    assert set(body.given.values()) == {"body"} and set(header.given.values()) == {"header"}


@pytest.mark.parametrize(
    ("provider", "headers", "match", "param"),
    [
        ({"only": ["zz"]}, None, "'zz' is not a provider of this model", "provider.only"),
        ({"only": ["a"], "ignore": ["a"]}, None, "only and provider.ignore both name a",
         "provider.only"),
        ({"only": ["a"], "order": ["b"]}, None, "order names b, which provider.only leaves out",
         "provider.order"),
        ({"only": []}, None, "provider.only is empty", "provider.only"),
        ({"sort": "fastest"}, None, "provider.sort must be one of", "provider.sort"),
        ({"quantizations": ["fp8"]}, None, "provider.quantizations is not supported",
         "provider.quantizations"),
        ({"max_price": {"request": 1}}, None, "max_price.request is not supported",
         "provider.max_price.request"),
        ({"max_price": {"prompt": -1}}, None, "must be a number >= 0",
         "provider.max_price.prompt"),
        ({"allow_fallbacks": "no"}, None, "must be a boolean", "provider.allow_fallbacks"),
        ("b", None, "'provider' must be an object", "provider"),
        ({"only": ["a"]}, {"x-ttft-router-provider-only": "b"}, "contradicts provider.only",
         "x-ttft-router-provider-only"),
        (None, {"x-ttft-router-provider-fastest": "1"}, "is not a request control",
         "x-ttft-router-provider-fastest"),
        (None, {"x-ttft-router-provider-allow-fallbacks": "maybe"}, "must be true or false",
         "x-ttft-router-provider-allow-fallbacks"),
        (None, {"x-ttft-router-affinity": "k"}, "affinity is off", "x-ttft-router-affinity"),
    ],
)  # fmt: skip
def test_bad_or_contradictory_controls_are_400_naming_them(
    provider: Any, headers: dict[str, str] | None, match: str, param: str
) -> None:
    error = rejected(match, provider, headers)
    assert error.status == 400 and error.param == param


def test_a_control_not_granted_is_403_naming_it_and_what_is_granted() -> None:
    error = forbidden("provider.only is not granted .* \\(granted: sort\\)", {"only": ["a"]},
                      allowed=["sort"])  # fmt: skip
    assert error.status == 403 and error.param == "provider.only"
    assert parsed({"sort": "price"}, allowed=["sort"]) is not None
    forbidden("provider.order is not granted", headers={"x-ttft-router-provider-order": "a"},
              allowed=["sort"])  # fmt: skip
    forbidden("\\(granted: none\\)", {"sort": "price"})  # nothing granted: no control at all


def test_a_provider_the_policy_rules_out_cannot_be_asked_for() -> None:
    rejected("'c' is ruled out by the model's policy", {"only": ["c"]}, pol=policy(exclude=["c"]))
    rejected("'c' is ruled out", {"order": ["c", "a"]}, pol=policy(allow=["a", "b"]))
    assert parsed({"ignore": ["c"]}, pol=policy(exclude=["c"])) is not None  # harmless


def test_affinity_key_from_header_or_user_when_enabled() -> None:
    pol = policy(affinity={"enabled": True})
    header = parsed(headers={"x-ttft-router-affinity": "conv-1"}, pol=pol, user="u")
    assert header is not None and header.affinity_key == "conv-1"
    user = parsed(pol=pol, user="u-7")
    assert user is not None and user.affinity_key == "u-7"
    no_user = policy(affinity={"enabled": True, "from_user": False})
    assert parsed(pol=no_user, user="u-7") is None
    # not granted to this client: `user` is only OpenAI's field, the header a 403
    assert parsed(pol=pol, allowed=["sort"], user="u-7") is None
    error = forbidden("x-ttft-router-affinity is not granted", headers={
        "x-ttft-router-affinity": "k"}, allowed=["sort"])  # fmt: skip
    assert error.param == "x-ttft-router-affinity"


# -- steering --------------------------------------------------------------------------


def test_without_controls_the_measured_order_stands() -> None:
    pol = policy()
    assert not steers(pol)
    steered = steer(measured(pol), None, pol, PRICES)
    assert [c.provider for c in steered.ranked] == ["a", "b", "c"] and not steered.shaped_by


def test_only_ignore_and_max_price_filter_with_reasons() -> None:
    pol = policy()
    assert order_of(pol, Controls(only=("b", "c"), given={"only": "body"})) == ["b", "c"]
    assert order_of(pol, Controls(ignore=("a",), given={"ignore": "header"})) == ["b", "c"]
    cheap = Controls(max_completion=6.0, given={"max_price": "body"})
    steered = steer(measured(pol), cheap, pol, PRICES)
    assert [c.provider for c in steered.ranked] == ["b", "c"]
    assert [c.excluded_because for c in steered.excluded] == [
        "over max price: completion above 6 per million"]  # fmt: skip
    assert "max price completion 6 per million" in steered.shaped_by
    # the policy's limit applies to every request; the lower of both wins
    assert order_of(policy(max_price_per_million={"prompt": 2.5})) == ["b", "c"]
    assert order_of(policy(max_price_per_million={"prompt": 2.5}),
                    Controls(max_prompt=1.5, given={"max_price": "body"})) == ["c"]  # fmt: skip
    # a pair priced nowhere is not used under a price limit
    assert order_of(policy(max_price_per_million={"prompt": 9}), prices={"b": PRICES["b"]}) == [
        "b"]  # fmt: skip


def test_sort_price_and_latency() -> None:
    pol = policy()
    assert order_of(pol, Controls(sort="price", given={"sort": "body"})) == ["c", "b", "a"]
    assert order_of(pol, Controls(sort="latency", given={"sort": "body"})) == ["a", "b", "c"]
    steered = steer(measured(pol), Controls(sort="throughput", given={"sort": "body"}), pol, {})
    assert [c.provider for c in steered.ranked] == ["a", "b", "c"]  # none measured: as ranked
    assert steered.shaped_by[0].endswith("a unmeasured, b unmeasured, c unmeasured")


def with_throughput(**p50: float) -> Ranking:
    """The measured ranking (a, b, c by TTFT) with decode throughput p50 per provider."""
    ranking = measured(policy())
    ranked = tuple(
        replace(c, score=replace(c.score, throughput=Throughput(20, v, v, v, v, 100.0)))
        if (v := p50.get(c.provider)) is not None else c
        for c in ranking.ranked
    )  # fmt: skip
    return replace(ranking, ranked=ranked)


def test_sort_throughput_orders_by_decode_throughput_unmeasured_last() -> None:
    c = Controls(sort="throughput", given={"sort": "body"}, output_tokens=128)
    steered = steer(with_throughput(a=20.0, c=400.0), c, policy(), {})
    assert [x.provider for x in steered.ranked] == ["c", "a", "b"]
    assert "c 400 tok/s (~0.72 s for 128 tokens), a 20 tok/s (~6.4 s), b unmeasured" in (
        steered.shaped_by[0])  # fmt: skip


def test_preferences_deprioritise_pairs_that_miss_never_exclude_them() -> None:
    slow = Cutoffs((("p50", 100.0),))
    c = Controls(min_throughput=slow, given={"preferred_min_throughput": "body"})
    steered = steer(with_throughput(a=20.0, b=150.0), c, policy(), {})
    assert [x.provider for x in steered.ranked] == ["b", "c", "a"] and not steered.excluded
    assert steered.shaped_by == [
        "preferred_min_throughput p50 100 tok/s: b meet it; c not measured; a miss it "
        "(deprioritised)"]  # fmt: skip
    # TTFT: a 0.1 s, b 0.2 s, c 0.4 s; p90 within 0.25 s: a and b meet it, in their order
    latency = Controls(max_latency=Cutoffs((("p90", 0.25),)), given={"preferred_max_latency": "b"})
    assert order_of(policy(), latency) == ["a", "b", "c"]
    both = replace(latency, min_throughput=slow)
    assert [x.provider for x in steer(with_throughput(a=20.0, b=150.0, c=500.0), both,
                                      policy(), {}).ranked] == ["b", "a", "c"]  # fmt: skip
    # the request's own order still comes first (precedence), preferences only reorder
    ordered = replace(c, order=("a",), given={**c.given, "order": "body"})
    first = steer(with_throughput(a=20.0, b=150.0), ordered, policy(), {}).ranked[0]
    assert first.provider == "a"


def test_preferences_and_sort_objects_parse_from_body_and_headers() -> None:
    body = parsed({"preferred_max_latency": 2, "sort": {"by": "throughput", "partition": "none"},
                   "preferred_min_throughput": {"p50": 50, "p90": 20}}, max_tokens=64)  # fmt: skip
    header = parsed(headers={
        "x-ttft-router-provider-preferred-max-latency": "2",
        "x-ttft-router-provider-preferred-min-throughput": "p90=20, p50=50",
        "x-ttft-router-provider-sort": "throughput",
    }, max_tokens=64)  # fmt: skip
    assert body is not None and header is not None
    for name in ("max_latency", "min_throughput", "sort", "output_tokens"):
        assert getattr(body, name) == getattr(header, name), name
    assert body.max_latency == Cutoffs((("p50", 2.0),))
    assert body.min_throughput == Cutoffs((("p50", 50.0), ("p90", 20.0)))
    assert (body.sort, body.partition, body.output_tokens) == ("throughput", "none", 64)
    assert parsed({"sort": {"by": "price"}}, max_completion_tokens=9).output_tokens == 9  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("provider", "headers", "param"),
    [
        ({"preferred_max_latency": -1}, None, "provider.preferred_max_latency.p50"),
        ({"preferred_min_throughput": {"p95": 3}}, None, "provider.preferred_min_throughput"),
        ({"preferred_min_throughput": {"p90": "fast"}}, None,
         "provider.preferred_min_throughput.p90"),
        ({"preferred_max_latency": {}}, None, "provider.preferred_max_latency"),
        ({"sort": {"by": "throughput", "partition": "provider"}}, None,
         "provider.sort.partition"),
        ({"sort": {"by": "speed"}}, None, "provider.sort"),
        ({"sort": {"order": "asc"}}, None, "provider.sort.order"),
        (None, {"x-ttft-router-provider-preferred-max-latency": "p50=soon"},
         "x-ttft-router-provider-preferred-max-latency"),
    ],
)  # fmt: skip
def test_bad_preferences_are_400_naming_the_field(
    provider: Any, headers: dict[str, str] | None, param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        parsed(provider, headers)
    assert info.value.status == 400 and info.value.param == param


def test_the_preferences_need_a_grant_like_every_control() -> None:
    error = forbidden("provider.preferred_min_throughput is not granted",
                      {"preferred_min_throughput": 10}, allowed=["sort"])  # fmt: skip
    assert error.param == "provider.preferred_min_throughput"
    assert parsed({"sort": {"by": "throughput"}}, allowed=["sort"]) is not None


def test_precedence_request_order_then_pin_then_affinity_then_policy_order() -> None:
    assert order_of(policy(order=["c", "b"])) == ["c", "b", "a"]
    assert order_of(policy(order=["c", "b"]), bound="a") == ["a", "c", "b"]
    assert order_of(policy(order=["c"], pin="b"), bound="a") == ["b", "a", "c"]
    request = Controls(order=("c",), given={"order": "body"})
    assert order_of(policy(order=["b"], pin="b"), request, bound="a") == ["c", "b", "a"]


def test_a_bound_provider_that_is_not_ranked_is_not_moved_first() -> None:
    pol = policy(exclude=["a"])
    steered = steer(measured(pol), None, pol, PRICES, bound="a")
    assert [c.provider for c in steered.ranked] == ["b", "c"] and steered.bound is None


def test_allow_fallbacks_false_keeps_only_what_was_named() -> None:
    no = {"allow_fallbacks": "body"}
    assert order_of(policy(), Controls(allow_fallbacks=False, given=no)) == ["a"]
    assert order_of(policy(), Controls(order=("c", "b"), allow_fallbacks=False,
                                       given={**no, "order": "body"})) == ["c", "b"]  # fmt: skip
    assert order_of(policy(pin="b", allow_fallbacks=False)) == ["b"]
    assert order_of(policy(pin="b")) == ["b", "a", "c"]  # pin fails over to the rest
    assert order_of(policy(pin="b", allow_fallbacks=False),
                    Controls(allow_fallbacks=True, given=no)) == ["b", "a", "c"]  # fmt: skip


def test_only_a_provider_that_is_out_leaves_nothing_and_names_it() -> None:
    pol = policy()
    limits = {Pair("m", "b"): NOW + 30}
    r = rank(ModelView(pol, "m", dict(DEPLOYMENTS), SCORES, NOW, rate_limited_until=limits),
             random.Random(1))  # fmt: skip
    steered = steer(r, Controls(only=("b",), given={"only": "body"}), pol, PRICES)
    assert steered.ranked == ()
    text = str(steered.reason)
    assert "b: rate-limited" in text and "provider.only b" in text


def test_cost_objective_cheapest_under_the_ceiling_else_the_fastest() -> None:
    # estimated tail means: a ~0.1 s, b ~0.2 s, c ~0.4 s; prices c < b < a
    assert order_of(policy(cost={"ceiling_s": 1.0})) == ["c", "b", "a"]
    assert order_of(policy(cost={"ceiling_s": 0.3})) == ["b", "a", "c"]
    assert order_of(policy(cost={"ceiling_s": 0.01})) == ["a", "b", "c"]  # none under: fastest
    assert steers(policy(cost={"ceiling_s": 1.0}))


def test_policy_knobs_are_validated() -> None:
    with pytest.raises(ValueError, match="pin names 'a', which exclude or allow rules out"):
        policy(pin="a", exclude=["a"])
    with pytest.raises(ValueError, match="order names 'c'"):
        policy(order=["c"], allow=["a", "b"])
    with pytest.raises(ValueError, match="order names a provider twice"):
        policy(order=["a", "a"])
    with pytest.raises(ValueError, match="client_controls"):
        policy(client_controls=["teleport"])


def test_unknown_providers_in_steering_fields_are_errors(tmp_path: Path) -> None:
    for field, value in (("allow", "[a, zz]"), ("pin", "zz"), ("order", "[zz]")):
        path = tmp_path / f"{field}.yaml"
        path.write_text(f"models:\n  m:\n    {field}: {value}\n")
        with pytest.raises(ConfigError, match=f"models.m.{field}: unknown provider 'zz'"):
            load_policies([path], providers=PROVIDERS)
